"""The synthetic city: a Rotterdam-like youth population with a known ground truth, and the raw extracts the
four partners would hand over, each in its own native format."""
