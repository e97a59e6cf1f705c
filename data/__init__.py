"""Datasets: one module per dataset plus the shared sample-building code (crop, augment, targets).

The data files themselves (images, annotations, body models) live in subdirectories of data/ and are
never committed (licence-restricted); see README.md.
"""
