"""Routing insight plots from real routing statistics: ``t2mir viz``."""
