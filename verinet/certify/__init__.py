"""Certification: per-sample verdicts and their report."""

from verinet.certify.certify import certify
from verinet.certify.report import CertificationReport

__all__ = ["CertificationReport", "certify"]
