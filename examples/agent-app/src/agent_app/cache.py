"""Redis cache of agent answers for identical inputs."""

from __future__ import annotations

import hashlib
import hmac

import redis

KEY_PREFIX = "agent-app:cache:"
HEARTBEAT_KEY = "agent-app:heartbeat"


def create_redis(url: str) -> redis.Redis:
    """A Redis client with short timeouts, returning ``str`` values."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)


class AnswerCache:
    """Answers keyed by a keyed hash of (model, input), so inputs never appear in key names."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, model_id: str, secret: str | None) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._model_id = model_id
        self._secret = (secret or "agent-app").encode()

    def key(self, text: str) -> str:
        digest = hmac.new(self._secret, f"{self._model_id}\0{text}".encode(), hashlib.sha256).hexdigest()
        return KEY_PREFIX + digest

    def get(self, text: str) -> str | None:
        if self._ttl <= 0:
            return None
        return self._client.get(self.key(text))

    def put(self, text: str, answer: str) -> None:
        if self._ttl > 0:
            self._client.set(self.key(text), answer, ex=self._ttl)
