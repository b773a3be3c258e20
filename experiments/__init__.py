"""Thin scripts over the aejax library, one per study."""
