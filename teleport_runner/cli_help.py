"""``teleport-train --help`` without importing Hydra or torch: the help header and footer of
``conf/hydra/default.yaml``, every config group with its options, and the top-level settings with their comments
(``conf/config.yaml``). With overrides (``teleport-train experiment=X --help``) Hydra composes and prints the config
instead, as ``--cfg job`` does."""
from __future__ import annotations

from pathlib import Path

from . import CONFIG_DIR


def fast_help() -> str:
    import yaml  # PyYAML, which Hydra uses: a few milliseconds, where Hydra itself takes a few hundred

    conf = Path(CONFIG_DIR)
    text = yaml.safe_load((conf / "hydra" / "default.yaml").read_text())["help"]
    groups = sorted(d.name for d in conf.iterdir() if d.is_dir() and d.name != "hydra" and not d.name.startswith("_"))
    lines = [text["header"].rstrip(), "", "== Configuration groups ==",
             "Compose your configuration from those groups (group=option)", ""]
    lines += [f"{g}: {', '.join(sorted(f.stem for f in (conf / g).glob('*.yaml')))}" for g in groups]
    settings, in_defaults = [], False
    for line in (conf / "config.yaml").read_text().splitlines():
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults and (line.startswith(" ") or line.startswith("-")):
            continue
        in_defaults = False
        if line.strip() and not line.startswith("#"):
            settings.append(line)
    lines += ["", "== Settings (conf/config.yaml; each group's own keys: teleport-train --cfg job) ==", ""]
    lines += settings + ["", text["footer"].rstrip()]
    return "\n".join(lines)
