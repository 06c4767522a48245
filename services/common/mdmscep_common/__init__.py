"""Shared library of the mdmscep services."""
