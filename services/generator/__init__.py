"""A seeded synthetic population of persons, devices and their behaviour (``tagstream generate``)."""
