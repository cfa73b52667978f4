"""Operations: metrics, worker heartbeats, queue depths, alerts and readiness.

Counters that worker processes increment (SMTP replies and latency, task failures and
retries) live in Redis, so every process on every machine adds to the same figures and
``/metrics`` reads them at scrape time together with what the database knows (deliveries
by state, bounces by class). Nothing here ever makes a send fail: when Redis is away,
recording is skipped and the database still holds the truth.
"""
