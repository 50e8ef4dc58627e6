"""``teleport-report PATH... [--out DIR] [--stat median|mean] [--no-figures]`` (see ``build``)."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import UserError
from .stats import STYLES


def main(argv=None) -> None:
    from .build import __doc__ as doc, build_report

    parser = argparse.ArgumentParser(prog="teleport-report", description=doc.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched for summary.json)")
    parser.add_argument("--out", help="where report.md, report.json and the figures go (default: the first path)")
    parser.add_argument("--stat", choices=STYLES, default="median",
                        help="median [min, max] (default; IQR from 5 runs) or mean ± std (the paper's style)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, *rest, **kw: f"Warning: {message}\n"
    try:
        build_report(args.paths, Path(args.out) if args.out else None, figures=not args.no_figures,
                     style=args.stat)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
