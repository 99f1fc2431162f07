"""`sft-eraser eval report`: behavior matrix, KL triple, utility, sparsity and ablations of a
carrier and its erasers, written as report.json, report.md and PNG charts (docs/evaluation.md).

inputs.py  parse and check the command's inputs    behavior.py  generation and rule scoring
teacher.py teacher-forced NLL / KL                 charts.py    PNGs;  render.py  markdown
run.py     the order of work and the atomic write
"""

from training.report.inputs import ReportConfig
from training.report.run import run_report

__all__ = ["ReportConfig", "run_report"]
