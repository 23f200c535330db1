"""No key or URI credential leaves: not in an exception (nor its cause or context), a Dagster event (its error
info and metadata), the run's stored config, the warehouse's recorded reasons or a log line, whatever the base URL;
and a plain-text secret in run config or code fails validation while the env form is accepted."""

import http.server
import logging
import threading

import dagster as dg
import pytest
from harness import query_dicts

from mining_assets.definitions import defs
from mining_assets.sources.media_registry import media_registry
from resources.mongo import MongoConfigError, MongoResource
from resources.stock_photos import PexelsSource, PixabayPhotoSource, StockPhotoError, UnsplashSource

SOURCES = {
    "pexels": (PexelsSource, "PEXELS_API_KEY"),
    "unsplash": (UnsplashSource, "UNSPLASH_ACCESS_KEY"),
    "pixabay": (PixabayPhotoSource, "PIXABAY_API_KEY"),
}
PASSWORD = "s3cretpw-7f3a9"
# base URLs configured wrong, each its own way; {live} is a server that answers 404 to everything
BAD_BASES = [
    "not a url",
    "http://127.0.0.1:1/api",  # nothing listens
    "ftp://x",
    "http://[bad",
    "http://127.0.0.1:abc/api",
    f"http://robot:{PASSWORD}@127.0.0.1:1/api",  # a credential in the URL
    "file:///etc/",
    "{live}/a b/",  # http.client refuses it quoting the whole URL, query string (Pixabay's key) included
    "{live}/api/",  # a 404
]


def key_of(source: str) -> str:
    return f"KEY-{source}-7f3a9"


class _NotFound(http.server.BaseHTTPRequestHandler):
    """The API's server: it receives the key (Pixabay's in the query string) and answers 404, logging nothing
    (its access log is the API's, not ours)."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_error(404)


@pytest.fixture
def live():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def keys(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    for source, (_, variable) in SOURCES.items():
        monkeypatch.setenv(variable, key_of(source))


def chain(error: BaseException) -> list[BaseException]:
    """The error and every exception it carries, as cause or as context (shown or not)."""
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def assert_nowhere(secret: str, *texts: object) -> None:
    for text in texts:
        assert secret not in str(text)


def assert_absent_from_run(result, instance, caplog, capfd, *secrets: str) -> None:
    """No secret in any event of the run (messages, error info with its stack, metadata), nor its stored config,
    nor anything logged or printed."""
    assert result.all_events
    texts = [*result.all_events, *(event.message for event in result.all_events), caplog.text, *capfd.readouterr()]
    texts.append(instance.get_run_by_id(result.run_id).run_config)
    for secret in secrets:
        assert_nowhere(secret, *texts)


def step_errors(result) -> dict[str, str]:
    return {
        event.step_key: event.step_failure_data.error.to_string()
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    }


@pytest.mark.parametrize("base", BAD_BASES)
@pytest.mark.parametrize("source", SOURCES)
def test_a_misconfigured_base_url_never_shows_the_key(source, base, live, caplog, capfd, instance):
    kind, _ = SOURCES[source]
    client = kind(base_url=base.format(live=live), requests_per_period=100_000, retries=0)
    image = base.format(live=live).rstrip("/") + "/img/1.jpg"
    for call in (lambda: client.search("door", 3), lambda: client.download(image)):
        with pytest.raises(StockPhotoError) as caught:
            call()
        assert_nowhere(key_of(source), *chain(caught.value), *map(repr, chain(caught.value)))
        assert_nowhere(PASSWORD, *chain(caught.value))
        assert caught.value.__cause__ is None and caught.value.__context__ is None

    @dg.asset(required_resource_keys={"stock"})
    def stock_search(context: dg.AssetExecutionContext) -> None:
        context.resources.stock.search("door", 3)

    @dg.asset(required_resource_keys={"stock"})
    def stock_download(context: dg.AssetExecutionContext) -> None:
        context.resources.stock.download(image)

    result = dg.materialize([stock_search, stock_download], resources={"stock": client}, instance=instance,
                            raise_on_error=False)  # fmt: skip
    errors = step_errors(result)
    assert set(errors) == {"stock_search", "stock_download"}
    assert all("StockPhotoError" in error for error in errors.values())
    assert_absent_from_run(result, instance, caplog, capfd, key_of(source), PASSWORD)


def test_media_registry_records_the_failures_without_the_keys(resources, instance, live, caplog, capfd):
    """Every stock source pointed at a URL that http.client refuses quoting it: the run goes on, and neither its
    events nor the warehouse's recorded reasons hold a key."""
    broken = {name: kind(base_url=f"{live}/a b/") for name, (kind, _) in SOURCES.items()}
    instance.add_dynamic_partitions("keyword", ["glass-door"])
    config = {"youtube_search": False, "uploads": False, "stock_sources": list(SOURCES)}
    result = dg.materialize([media_registry], partition_key="glass-door", resources={**resources, **broken},
                            instance=instance, run_config={"ops": {"media_registry": {"config": config}}})  # fmt: skip
    assert result.success
    reasons = {row["item"]: row["reason"] for row in query_dicts(resources, "SELECT * FROM ingest_errors")}
    assert set(reasons) == set(SOURCES) and all("InvalidURL" in reason for reason in reasons.values())
    keys = [key_of(source) for source in SOURCES]
    for key in keys:
        assert_nowhere(key, reasons)
    assert_absent_from_run(result, instance, caplog, capfd, *keys)


@pytest.mark.parametrize("source", ["pexels", "unsplash"])
def test_a_key_with_a_line_break_is_refused_without_quoting_it(source, monkeypatch, live):
    kind, variable = SOURCES[source]
    monkeypatch.setenv(variable, key_of(source) + "\nX-Injected: 1")
    with pytest.raises(StockPhotoError, match=f"the API key in {variable} holds a line break") as caught:
        kind(base_url=live).search("door", 1)
    assert_nowhere(key_of(source), *chain(caught.value))


def test_a_key_named_through_a_nested_env_form_is_never_named(instance, live, caplog, capfd):
    """``{env: {env: PEXELS_API_KEY}}`` makes the key itself the variable's name: messages don't name it."""

    @dg.asset
    def searched(pexels: PexelsSource) -> None:
        pexels.search("door", 1)

    run_config = {"resources": {"pexels": {"config": {"api_key": {"env": {"env": "PEXELS_API_KEY"}}}}}}
    result = dg.materialize([searched], resources={"pexels": PexelsSource(base_url=live)}, instance=instance,
                            run_config=run_config, raise_on_error=False)  # fmt: skip
    assert "no API key: set the variable that api_key names" in step_errors(result)["searched"]
    assert_absent_from_run(result, instance, caplog, capfd, key_of("pexels"))


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://robot:{PASSWORD}@127.0.0.1:1/?serverSelectionTimeoutMS=200",  # nothing listens
        f"mongodb://robot:{PASSWORD}@127.0.0.1:notaport/",
        f"mongodb://robot:{PASSWORD.replace('-', '%2D')}@[bad/",
        f"mongodb+srv://robot:{PASSWORD}@nonexistent.invalid/?serverSelectionTimeoutMS=200",
    ],
)
def test_a_wrong_mongodb_uri_never_shows_the_password(uri, monkeypatch, instance, caplog, capfd):
    monkeypatch.setenv("MONGODB_URI", uri)
    mongo = MongoResource(server_selection_timeout_ms=200)

    def ping() -> None:
        client = mongo.get_client()
        try:
            client.admin.command("ping")
        finally:
            client.close()

    with pytest.raises(Exception) as caught:  # MongoConfigError, or pymongo's on first use
        ping()
    assert_nowhere(PASSWORD, *chain(caught.value), *map(repr, chain(caught.value)), mongo.redacted_host())
    if isinstance(caught.value, MongoConfigError):
        assert caught.value.__cause__ is None and caught.value.__context__ is None

    @dg.asset
    def pinged(mongo: MongoResource) -> None:
        ping()

    result = dg.materialize([pinged], resources={"mongo": mongo}, instance=instance, raise_on_error=False)
    assert set(step_errors(result)) == {"pinged"}
    assert_absent_from_run(result, instance, caplog, capfd, PASSWORD)


@dg.asset
def uses_secrets(pexels: PexelsSource, mongo: MongoResource) -> None:
    """Needs both resources, reads neither secret."""


SECRET_FIELDS = [("pexels", "api_key", "PEXELS_API_KEY"), ("mongo", "uri", "MONGODB_URI")]


@pytest.mark.parametrize(("resource", "field", "variable"), SECRET_FIELDS)
def test_a_plain_text_secret_in_run_config_fails_validation(resource, field, variable, instance):
    plain = {"resources": {resource: {"config": {field: key_of("plain")}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        dg.materialize([uses_secrets], resources={"pexels": PexelsSource(), "mongo": MongoResource()},
                       instance=instance, run_config=plain)  # fmt: skip
    assert f"root:resources:{resource}:config:{field}" in str(caught.value)
    assert_nowhere(key_of("plain"), *chain(caught.value))
    env_form = {"resources": {resource: {"config": {field: {"env": variable}}}}}
    assert dg.materialize([uses_secrets], resources={"pexels": PexelsSource(), "mongo": MongoResource()},
                          instance=instance, run_config=env_form).success  # fmt: skip


@pytest.mark.parametrize(("resource", "field", "variable"), SECRET_FIELDS)
def test_the_production_jobs_refuse_a_plain_text_secret(resource, field, variable):
    job = defs.resolve_job_def("photo_pipeline" if resource == "pexels" else "mongo_export_job")
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        dg.validate_run_config(job, {"resources": {resource: {"config": {field: key_of("plain")}}}})
    assert_nowhere(key_of("plain"), *chain(caught.value))
    assert dg.validate_run_config(job, {"resources": {resource: {"config": {field: {"env": variable}}}}})


@pytest.mark.parametrize(("kind", "field"), [(PexelsSource, "api_key"), (MongoResource, "uri")])
def test_code_takes_a_secret_only_as_an_env_var(kind, field, monkeypatch):
    with pytest.raises(Exception, match="a secret in plain text is refused") as caught:
        kind(**{field: key_of("plain")})
    assert_nowhere(key_of("plain"), *chain(caught.value), *map(repr, chain(caught.value)))
    monkeypatch.setenv("MY_SECRET", "mongodb://robot:pw@127.0.0.1:9/")
    resource = kind(**{field: dg.EnvVar("MY_SECRET")})
    if kind is PexelsSource:
        assert resource._key_variable() == ("MY_SECRET", "the variable that api_key names")
    else:
        assert resource.connection_uri() == "mongodb://robot:pw@127.0.0.1:9/"
