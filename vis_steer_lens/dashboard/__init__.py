"""Dashboards of a results folder: a static HTML site, and Neuronpedia batch files for upload."""

from vis_steer_lens.dashboard.html import DashboardSize, dashboard_size, export_dashboard
from vis_steer_lens.dashboard.neuronpedia import export_neuronpedia

__all__ = ["DashboardSize", "dashboard_size", "export_dashboard", "export_neuronpedia"]
