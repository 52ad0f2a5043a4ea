"""The optimization passes (one per file) and the PassManager that runs them.

    g2 = cnncc.optimize(g, opt_level=2)     # or passes=[...], disable=[...]
    print(g2.pass_report)                  # one line per pass: nodes, time, what changed
"""
from .base import PASSES, register_pass
from .manager import PIPELINES, PassRecord, PassReport, optimize, pipeline_for

__all__ = ["PASSES", "PIPELINES", "PassRecord", "PassReport", "optimize", "pipeline_for", "register_pass"]
