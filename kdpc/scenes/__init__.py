"""Whole scenes: seeded, replayable scene views (``transforms``), voxel sampling and crops (``grid``), and the
concatenated-points batches scene models take (``batch``)."""
