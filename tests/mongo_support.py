"""A stand-in for MongoDB in tests: the production MongoResource with mongomock's client in place of pymongo's (no
MongoDB server is installable here). The fixture ``mongo_resources`` (tests/conftest.py) provides it."""

import mongomock
from mongomock.store import ServerStore

from resources.mongo import MongoResource

SECRET = "hunter2-s3cret"
URI = f"mongodb://robot:{SECRET}@mongo.internal.test:27017/training?authSource=admin"
STORES: dict[str, ServerStore] = {}


class MongomockResource(MongoResource):
    """The production resource (same URI handling) with mongomock's client in place of pymongo's."""

    store: str = "default"

    def _make_client(self, uri: str):
        return mongomock.MongoClient(uri, _store=STORES.setdefault(self.store, ServerStore()))


class UnparseableUriResource(MongoResource):
    """A client factory that fails quoting the URI, as a driver might."""

    def _make_client(self, uri: str):
        raise ValueError(f"cannot parse {uri!r}")
