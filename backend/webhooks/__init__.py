"""Webhooks: a job's terminal event POSTed to its `callback_url`, signed per Standard Webhooks.

`ssrf.py` (which URLs and addresses a callback may reach), `signing.py` (the three headers),
`records.py` (a delivery's Structs), `outbox.py` (its Redis keys, written atomically with the
event by jobs.py), `callbacks.py` (the API's check of a `callback_url`), `delivery.py` (the
worker's sender: attempts, backoff, outcomes). Nothing is imported here, so models.py can
import records.py without pulling the rest in.
"""
