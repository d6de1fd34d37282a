"""Issue 12 in a real browser: the web console against a real 3-node cluster.

Debian's chromium driven by Playwright (never `playwright install`: nothing is
downloaded). The cluster is devcluster's, over its real mutual-TLS setup, and
the browser talks straight to the first node's HTTPS, https://127.0.0.1:PORT/ui/.

How the browser trusts the node: the cluster CA (ca.pem) is installed into
the NSS database of a temporary home directory (`certutil`, package
libnss3-tools), which Chromium on Linux reads for locally trusted roots;
then Chromium verifies the node's certificate chain to that CA and its name
(the certificate's IP SAN 127.0.0.1) as it would any site's: no
ignore_https_errors, no --ignore-certificate-errors-spki-list. That is what an
operator does with ca.pem in their own browser, and it is the point of the
test: browsers must accept both the nodes' ECDSA P-256 certificates in the TLS
handshake and the CA's signatures on them (with Ed25519 they accepted
neither). Pinning the node certificate's SPKI would have skipped the second
half. A browser without the CA is refused, so the trust is really checked.

Screenshots go to tests/console/artifacts/ (gitignored); two of them are
copied to docs/console-nodes.png and docs/console-decisions.png.

Regions: nodes get one (`hypercore cluster --region`) only when the agent has
that flag (AgentConfig.region); until then the Region column must say "—" and
the map is colored by status. test_the_map_colors_by_region checks the region
coloring either way: with the real flag when it exists, else by adding a
`region` to each item of the real agent's /v1/nodes answer in the browser
(Playwright's route; the one part that cannot exist on an agent without the
flag).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from hypercore.config import AgentConfig
from hypercore.devcluster import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.serf, pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EXEC_ONLY = ("--enable-exec", "--disable-containers")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = "sleep 61 # <img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"
WANTED_REGIONS = {"alpha": "eu", "beta": "eu", "gamma": "us"}
HAS_REGION_FLAG = "region" in AgentConfig.model_fields
REGIONS = WANTED_REGIONS if HAS_REGION_FLAG else {}  # what the agents really say
NEAREST = ('{"name": "nearest", "mode": "enforce", "scoring": {"latency_weight": 1, "price_weight": 0,'
           ' "reputation_weight": 0, "queue_weight": 0}}')


def region_args(name: str) -> tuple[str, ...]:
    return ("--region", REGIONS[name]) if name in REGIONS else ()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("console"))
    try:
        c.add("alpha", *EXEC_ONLY, "--beacon-price", "0.010", "--beacon-reputation", "0.90", *region_args("alpha"))
        c.add("beta", *EXEC_ONLY, "--beacon-price", "0.020", "--beacon-reputation", "0.95", *region_args("beta"))
        c.add("gamma", *EXEC_ONLY, "--beacon-price", "0.040", "--beacon-reputation", "0.99", *region_args("gamma"))
        c.wait_converged()
        yield c
    finally:
        c.close()


def home_trusting(ca_file: Path, home: Path) -> Path:
    """`home` with an NSS database ($HOME/.pki/nssdb, where Chromium looks) that trusts `ca_file` for TLS servers."""
    nssdb = f"sql:{home / '.pki' / 'nssdb'}"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    certutil = shutil.which("certutil")
    assert certutil is not None, "certutil not on PATH (tests/conftest.py checks this before the test)"
    subprocess.run([certutil, "-N", "-d", nssdb, "--empty-password"], check=True, capture_output=True)
    # -t "C,,": a CA trusted to issue server certificates; nothing else.
    subprocess.run([certutil, "-A", "-d", nssdb, "-n", "hypercore cluster CA", "-t", "C,,", "-i", str(ca_file)],
                   check=True, capture_output=True)
    return home


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(trio: Cluster, playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium whose only extra trust is the cluster CA."""
    home = home_trusting(trio.pki.ca_file, tmp_path_factory.mktemp("browser-home"))
    b = playwright.chromium.launch(executable_path=CHROMIUM, env={**os.environ, "HOME": str(home)})
    try:
        yield b
    finally:
        b.close()


def test_a_browser_without_the_cluster_ca_refuses_the_node(trio: Cluster, playwright: Any,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """The trust is checked: an empty NSS database, and the same page fails on the certificate's issuer."""
    from playwright.sync_api import Error

    home = tmp_path_factory.mktemp("untrusting-home")
    b = playwright.chromium.launch(executable_path=CHROMIUM, env={**os.environ, "HOME": str(home)})
    try:
        page = b.new_page()
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(f"{trio['alpha'].url}/ui/")
    finally:
        b.close()


def navigate(go: Callable[[], Any]) -> Any:
    """`page.goto(...)` or `page.reload()`, again when Chromium abandons it for a change of the machine's network
    (ERR_NETWORK_CHANGED): other tests create and remove network namespaces and veth devices meanwhile, which
    its network-change watcher sees; the loopback address it loads from does not change."""
    from playwright.sync_api import Error

    for _ in range(4):
        try:
            return go()
        except Error as exc:
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
            time.sleep(0.5)
    return go()


def no_horizontal_overflow(page: Any, what: str) -> None:
    width, scroll = page.evaluate("[innerWidth, document.documentElement.scrollWidth]")
    assert scroll <= width, f"{what}: the page is {scroll} px wide in a {width} px window"


def check_sizes(page: Any, name: str) -> None:
    """The current tab at a desktop's and a phone's size: no sideways scrolling; a screenshot of each."""
    for label, size in (("1280", DESKTOP), ("390", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        no_horizontal_overflow(page, f"{name} at {label} px")
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def test_console_in_a_browser(trio: Cluster, browser: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=20_000)
    # A workload whose command is markup: the console must show it as text.
    hostile = trio["beta"].post("/v1/workloads", {"spec": {"command": HOSTILE, "cpu": 0.1, "mem": 16}})
    assert hostile.status_code == 201, hostile.text

    context = browser.new_context(viewport=DESKTOP)  # TLS checked against the cluster CA, nothing ignored
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors and CSP violations; not the 401 and 422 answers this test provokes on purpose.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    response = navigate(lambda: page.goto(f"{trio['alpha'].url}/ui/"))  # the node itself: https://127.0.0.1:PORT/ui/
    assert response is not None and response.status == 200
    tls = response.security_details()  # the node's own certificate, issued by the cluster CA, over TLS 1.3
    assert tls is not None and tls["protocol"] == "TLS 1.3" and tls["subjectName"] == "alpha", tls
    ca_cert = x509.load_pem_x509_certificate(trio.pki.ca_file.read_bytes())
    assert tls["issuer"] == ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, tls
    assert "default-src 'self'" in response.headers["content-security-policy"]

    # Log in: a bad token is refused with the node's message, the good one opens the tabs.
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token-input", "not-a-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error .error")).to_contain_text("token refused")
    page.fill("#token-input", trio.token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#tabs")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('hypercore.token')") == trio.token

    # Nodes: three alive, admitted members with their metrics, on the map and in the table.
    rows = page.locator("#nodes-table tbody tr")
    expect(rows).to_have_count(3)
    for name in ("alpha", "beta", "gamma"):
        row = page.locator(f"#nodes-table tbody tr[data-name={name}]")
        expect(row).to_have_class("alive")
        expect(row).to_contain_text("exec")
        expect(row.locator("td.region")).to_have_text(REGIONS.get(name, "—"))
        expect(page.locator(f"#node-map g.map-node.alive[data-name={name}]")).to_have_count(1)
    expect(page.locator("#nodes-table thead th").nth(2)).to_have_text("region")
    expect(page.locator("#nodes-table tbody tr[data-name=beta] td").nth(7)).to_have_text("0.0200")
    expect(page.locator("#node-map")).to_have_attribute("data-color", "region" if REGIONS else "status")
    expect(page.locator("#this-node")).to_contain_text("alpha")
    # The map places them by Serf's network coordinates once this node has read them (every few seconds).
    expect(page.locator("#node-map")).to_have_attribute("data-layout", "coordinates", timeout=40_000)
    expect(page.locator("#node-map line.link")).to_have_count(2)
    check_sizes(page, "nodes")
    shutil.copyfile(ARTIFACTS / "nodes-1280.png", ROOT / "docs" / "console-nodes.png")

    # Policy playground: the cluster policy, the live explain, inline errors, then a spawn.
    page.click("#tabs a[data-tab=playground]")
    expect(page.locator("#explain ol.ranked > li")).to_have_count(3)
    cluster_policy = page.input_value("#policy-text")
    assert '"name"' in cluster_policy
    page.fill("#policy-text", '{"name": "broken", "mode": "enforce", "max_latency_ms": -1, "surprise": 1}')
    expect(page.locator("#policy-errors .error")).to_contain_text("invalid_policy")
    expect(page.locator("#policy-errors .error li").first).to_be_visible()
    page.fill("#policy-text", "{")
    expect(page.locator("#policy-errors .error")).to_contain_text("not JSON")

    # Near: latency from the chosen node, as `--near` — in the explain and in the spawn.
    ranked = page.locator("#explain ol.ranked > li")
    expect(page.locator("#spec-near option")).to_have_count(3)
    assert page.locator("#spec-near option").evaluate_all("os => os.map(o => o.value)") == ["", "beta", "gamma"]
    page.fill("#policy-text", NEAREST)
    expect(ranked.first).to_have_attribute("data-node", "alpha")  # this node: 0 ms from itself
    expect(ranked.first.locator(".link")).to_have_attribute("data-source", "self")
    expect(page.locator("#explain p.origin")).to_contain_text("alpha")
    page.select_option("#spec-near", "gamma")
    expect(page.locator("#explain")).to_have_attribute("data-near", "gamma")
    expect(ranked.first).to_have_attribute("data-node", "gamma")
    expect(ranked.first.locator(".link")).to_have_attribute("data-source", "self")
    expect(ranked.first.locator(".link")).to_contain_text("latency 0 ms")
    expect(ranked.first.locator(".link")).to_contain_text("from gamma (self)")
    expect(page.locator("#explain p.origin")).to_have_text(
        "Latency as seen from gamma; jitter and loss as this node (alpha) measured them.")
    # alpha, as seen from gamma: estimated (coordinates) or alpha's own probes of gamma — never "self".
    alpha_link = page.locator("#explain ol.ranked > li[data-node=alpha] .link")
    expect(alpha_link).to_contain_text("from gamma")
    assert alpha_link.get_attribute("data-source") in ("coordinates", "probes", "probes+coordinates"), \
        alpha_link.get_attribute("data-source")
    check_sizes(page, "playground-near")
    page.click("#spawn")
    near_placed = page.locator("#spawn-result .success")
    expect(near_placed).to_contain_text("on gamma")
    near_id = near_placed.locator("code").inner_text()
    assert trio["gamma"].get(f"/v1/workloads/{near_id}").json()["state"] in ("pending", "running")
    page.select_option("#spec-near", "")
    expect(ranked.first).to_have_attribute("data-node", "alpha")
    expect(page.locator("#explain")).to_have_attribute("data-near", "")
    page.fill("#policy-text", '{"name": "cheapest", "mode": "enforce", "max_price_per_gb": 0.03,'
                              ' "scoring": {"price_weight": 1, "latency_weight": 0, "reputation_weight": 0,'
                              ' "queue_weight": 0}}')
    expect(page.locator("#explain ol.ranked > li")).to_have_count(2)
    expect(page.locator("#explain ol.ranked > li").first).to_have_attribute("data-node", "alpha")
    expect(page.locator("#explain details.rejected li[data-node=gamma]")).to_contain_text("price_per_gb")
    expect(page.locator("#policy-errors .error")).to_have_count(0)
    page.fill("#spec-command", "sleep 60")
    check_sizes(page, "playground")
    page.click("#spawn")
    placed = page.locator("#spawn-result .success")
    expect(placed).to_contain_text("Placed")
    expect(placed).to_contain_text("on alpha")
    workload_id = placed.locator("code").inner_text()
    # Its request id names the node the console runs on as its home: alpha placed it and holds its entry.
    entry = trio["alpha"].node_request("GET", f"/v1/local/entries/{workload_id}")
    assert entry.status_code == 200 and entry.json()["key"].endswith("@alpha"), entry.text

    # Workloads: it runs on alpha; its log opens; the hostile command is text; stop, then remove.
    page.click("#tabs a[data-tab=workloads]")
    row = page.locator(f"#workloads-table tr[data-id='{workload_id}']")
    expect(row).to_have_attribute("data-state", "running")
    expect(row.locator("td").nth(1)).to_have_text("alpha")
    expect(row.locator("td.cmd")).to_have_text("sleep 60")
    hostile_row = page.locator(f"#workloads-table tr[data-id='{hostile.json()['id']}']")
    expect(hostile_row.locator("td.cmd")).to_have_text(HOSTILE)
    assert hostile_row.locator("img, script").count() == 0
    assert page.evaluate("window.pwned") is None
    row.locator("button[data-action=logs]").click()
    expect(page.locator("#log-pane")).to_be_visible()
    expect(page.locator("#log-text")).to_have_text("(empty)")
    check_sizes(page, "workloads")
    row.locator("button[data-action=stop]").click()
    expect(row).to_have_attribute("data-state", "stopped")
    expect(row.locator("button[data-action=remove]")).to_be_enabled()
    assert trio["alpha"].get(f"/v1/workloads/{workload_id}").json()["state"] == "stopped"

    # Decisions: the placement, its ranking with per-metric bars, the rejected node, its attempt.
    page.click("#tabs a[data-tab=decisions]")
    card = page.locator(f"#decisions-list article[data-id='{workload_id}']")
    expect(card).to_be_visible()
    expect(card.locator("header")).to_contain_text("placed")
    expect(card.locator("header")).to_contain_text("on alpha")
    expect(card.locator("ol.ranked > li")).to_have_count(2)
    expect(card.locator("ol.ranked > li").first.locator(".bar .part")).to_have_count(4)
    assert card.locator("ol.ranked > li").first.locator(".part.price").evaluate("e => e.getBoundingClientRect().width") > 0
    expect(card.locator("details.rejected li[data-node=gamma]")).to_be_visible()
    expect(card.locator("ol.attempts li")).to_have_text("alpha ok")
    check_sizes(page, "decisions")
    card.screenshot(path=str(ARTIFACTS / "decision-card.png"))
    shutil.copyfile(ARTIFACTS / "decisions-1280.png", ROOT / "docs" / "console-decisions.png")

    # Remove it from Workloads; it is gone from the list and from the node.
    page.click("#tabs a[data-tab=workloads]")
    row.locator("button[data-action=remove]").click()
    expect(row).to_have_count(0)
    wait_for(lambda: trio["alpha"].get(f"/v1/workloads/{workload_id}").status_code == 404, 10, "removed")

    # Logging out forgets the token.
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('hypercore.token')") is None
    assert errors == []
    context.close()


def test_the_map_colors_by_region(trio: Cluster, browser: Any) -> None:
    """Members with a region: the Region column says it, the map colors by it, the legend names each."""
    from playwright.sync_api import Route, expect

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=20_000)
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    if not HAS_REGION_FLAG:
        # The agent has no --region yet: give its real /v1/nodes answer the field the flag will add.
        # (Fetched here over HTTPS checked against ca.pem: Playwright's own route.fetch does not read
        # the browser's NSS trust.)
        def with_regions(route: Route) -> None:
            response = httpx.get(route.request.url, verify=trio.pki.verify(), timeout=30)
            body = response.json()
            for node in body["nodes"]:
                node["region"] = WANTED_REGIONS[node["name"]]
            route.fulfill(status=response.status_code, json=body)

        page.route("**/v1/nodes*", with_regions)
    navigate(lambda: page.goto(f"{trio['alpha'].url}/ui/"))
    page.evaluate("token => sessionStorage.setItem('hypercore.token', token)", trio.token)
    navigate(page.reload)
    expect(page.locator("#nodes-table tbody tr")).to_have_count(3)
    for name, region in WANTED_REGIONS.items():
        expect(page.locator(f"#nodes-table tbody tr[data-name={name}] td.region")).to_have_text(region)
        expect(page.locator(f"#node-map g.map-node[data-name={name}]")).to_have_attribute("data-region", region)
    svg = page.locator("#node-map")
    expect(svg).to_have_attribute("data-color", "region")
    expect(svg).to_have_attribute("aria-label", "nodes by region")
    # Regions in name order take the palette in order: eu the first color, us the second.
    expect(page.locator("#node-map g.map-node[data-name=alpha]")).to_have_class("map-node alive region-0")
    expect(page.locator("#node-map g.map-node[data-name=gamma]")).to_have_class("map-node alive region-1")
    fill_of = "name => getComputedStyle(document.querySelector(`#node-map g[data-name=${name}] circle.dot`)).fill"
    assert page.evaluate(fill_of, "alpha") == page.evaluate(fill_of, "beta") != page.evaluate(fill_of, "gamma")
    legend = page.locator("#map-legend i.dot[data-region]")
    assert legend.evaluate_all("ds => ds.map(d => d.dataset.region)") == ["eu", "us"]
    expect(page.locator("#nodes-summary")).to_contain_text("eu: 2, us: 1")
    check_sizes(page, "nodes-regions")
    context.close()
