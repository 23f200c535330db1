"""Exports of mined data to the systems that consume it (MongoDB for robot-training pipelines)."""
