"""Pools, sessions, the tool catalogue and the pool manager: what a PC's lifecycle is."""
