"""The report: per-experiment figures, the bottleneck verdict, and the pictures."""

from augment.profiler.report.summary import summarize, write_report
from augment.profiler.report.verdicts import RULES, verdict

__all__ = ["summarize", "write_report", "verdict", "RULES"]
