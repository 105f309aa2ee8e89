//! Samplers and the seeded random number generator.
