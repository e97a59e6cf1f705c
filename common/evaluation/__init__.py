"""The 3DPW evaluation metrics (spec 6): MPJPE, PA-MPJPE, MPVPE, their accumulation and the results files."""
