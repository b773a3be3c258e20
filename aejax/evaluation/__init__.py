"""Evaluation: reconstruction metrics and PCA (`metrics`, computed chunk by chunk: `chunks`), classical denoisers
(`baselines`), bit counts and classic codecs (`compression`), rate-distortion fronts and BD-rate
(`rd_curves`) and the figures (`plots`)."""
