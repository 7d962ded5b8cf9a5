"""Password guessing through nginx: nginx answers a burst of login POSTs from one address with
429, and the replica locks a guessing address (django-axes) by the client's own address, which
it learns through nginx, so that one guesser does not lock everyone else out.

Every address in 127.0.0.0/8 is this machine: each test's clients come from addresses of their
own, and nginx and the replica see them as different clients.
"""

import http.client
import urllib.parse
from http.cookies import SimpleCookie

import pytest

from deploy.cluster import LocalCluster
from tests.e2e.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NGINX_BURST = 20  # deploy/nginx-*.conf: limit_req zone=logins burst=20 (at 10 a minute)
AXES_LIMIT = 10  # LOGIN_FAILURE_LIMIT's default


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """nginx over one replica (the memory layer: no relaying is needed), with a manager."""
    cluster = LocalCluster(replicas=1, layer="memory", workdir=tmp_path_factory.mktemp("logins"))
    try:
        cluster.start()
        cluster.manage("addteam", "gate", "--manager", "gate-boss", "--password", PASSWORD)
        yield cluster
    finally:
        cluster.stop()


def send(site, source: str, method: str, path: str, form: dict | None = None, cookie: str = ""):
    """Make one request to nginx from `source`; return the status, body and Set-Cookie values."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", site.port, timeout=10, source_address=(source, 0)
    )
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    content = response.read().decode()
    cookies = SimpleCookie()
    for header in response.msg.get_all("Set-Cookie") or []:
        cookies.load(header)
    connection.close()
    return response.status, content, {name: morsel.value for name, morsel in cookies.items()}


def log_in(site, source: str, username: str, password: str) -> tuple[int, str, dict]:
    """Fill in the login form as a browser would (CSRF cookie and token) from `source`."""
    status, _, cookies = send(site, source, "GET", "/accounts/login/")
    assert status == 200, status
    token = cookies["csrftoken"]
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return send(site, source, "POST", "/accounts/login/", form, cookie=f"csrftoken={token}")


def from_nginx(status: int, body: str) -> bool:
    return status == 429 and "<center>nginx</center>" in body


def test_nginx_answers_a_burst_of_login_posts_from_one_address_with_429(site):
    guesser, neighbour = "127.0.0.10", "127.0.0.11"
    # No CSRF token: what reaches the replica is refused with 403 there, before any hashing.
    answers = [send(site, guesser, "POST", "/accounts/login/", {}) for _ in range(30)]
    statuses = [status for status, _, _ in answers]
    assert statuses[: NGINX_BURST + 1] == [403] * (NGINX_BURST + 1), statuses
    assert all(from_nginx(status, body) for status, body, _ in answers[NGINX_BURST + 2 :]), statuses
    # Both login forms share the address's budget; GETs of the form are not counted.
    assert from_nginx(*send(site, guesser, "POST", "/admin/login/", {})[:2])
    assert send(site, guesser, "GET", "/accounts/login/")[0] == 200
    # Another address has a budget of its own.
    assert send(site, neighbour, "POST", "/accounts/login/", {})[0] == 403


def test_the_replica_locks_the_guessing_address_and_no_other(site):
    guesser, manager = "127.0.0.20", "127.0.0.21"
    for number in range(AXES_LIMIT - 1):
        status, body, _ = log_in(site, guesser, f"nobody-{number}", "guess")
        assert status == 200 and "Please enter a correct username" in body, status
    status, body, _ = log_in(site, guesser, "nobody-last", "guess")
    assert status == 429 and "Too many failed logins" in body, status
    # Locked: even the right password is refused from there, by the replica (not by nginx).
    status, body, cookies = log_in(site, guesser, "gate-boss", PASSWORD)
    assert status == 429 and "Too many failed logins" in body and "sessionid" not in cookies
    # The replica saw each client's own address, not nginx's: the manager elsewhere gets in.
    status, _, cookies = log_in(site, manager, "gate-boss", PASSWORD)
    assert status == 302 and cookies.get("sessionid"), status
