"""Presets: the original study's settings and aejax's improvements, as `Config`s and study arms."""
