"""Tests of the individual techniques (techniques/)."""
