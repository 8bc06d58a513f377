"""Supervised fine-tuning of the recommender: the recipe each Ray Train worker runs, the
order of its rows, and optional tracking."""
