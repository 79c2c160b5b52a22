"""Trigger-word app: stream audio from a microphone or file and report a spoken word."""
