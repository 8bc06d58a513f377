"""Online recommendation: request checking and the run's data (no Ray), and the Ray Serve app."""
