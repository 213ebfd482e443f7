"""The synthetic city: a Rotterdam-like youth population with a known ground truth, and the raw extracts the
four partners would hand over, each in its own native format."""

from kansrijk.synth.city import CityPaths, generate_city, load_city

__all__ = ["CityPaths", "generate_city", "load_city"]
