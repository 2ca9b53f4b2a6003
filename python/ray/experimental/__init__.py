"""Experimental APIs of Ray: `ray.experimental.tqdm_ray` (progress bars of
tasks and actors, drawn by the driver)."""
