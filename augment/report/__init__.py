"""The report: per-experiment figures, the bottleneck verdict, and the pictures."""

from augment.report.summary import summarize, write_report
from augment.report.verdicts import RULES, verdict

__all__ = ["summarize", "write_report", "verdict", "RULES"]
