"""Reporting: runs on disk (``runs``), statistics (``stats``), tables and ``report.json`` (``tables``), the report
(``build``, ``cli``: ``teleport-report``), figures of a report (``figures``) and of one run (``run_figures``), and the
sweep-end callback (``sweep``). Nothing here imports torch unless a run figure needs a problem's contours."""
