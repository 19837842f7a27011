"""Certification: per-sample verdicts, their report and its analysis."""

from verinet.certify.analysis import ReportAnalysis
from verinet.certify.certify import certify
from verinet.certify.curve import robustness_curve
from verinet.certify.report import CertificationReport

__all__ = ["CertificationReport", "ReportAnalysis", "certify", "robustness_curve"]
