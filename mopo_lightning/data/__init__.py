"""Offline datasets: locate, download, read, validate and summarise. Imports only the task registry."""
