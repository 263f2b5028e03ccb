"""Training: the loop, its optimizer and schedule, state and resume, and what it logs."""
