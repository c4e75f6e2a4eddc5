"""Access control with real clients: robots, public namespaces, refused credentials, the API."""

import json

import requests
from openapi_spec_validator import validate

from conftest import inspect_raw, run, skopeo


def test_robot_account_used_by_skopeo(wharf, small_image):
    created = wharf.api("POST", "/robots", json={
        "name": "ci-pusher",
        "permissions": [{"scope": "namespace", "name": "robots", "actions": ["pull", "push"]}],
    })
    assert created.status_code == 201, created.text
    robot = created.json()
    assert robot["name"] == "robot$ci-pusher"
    creds = f"{robot['name']}:{robot['secret']}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}", f"docker://{wharf.host}/robots/app:1")
    assert json.loads(inspect_raw(f"docker://{wharf.host}/robots/app:1", creds))["layers"]
    # Outside its namespace the robot is refused.
    refused = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{small_image}",
                     f"docker://{wharf.host}/elsewhere/app:1", check=False)
    assert refused.returncode != 0
    assert any(word in refused.stderr.lower() for word in ("denied", "unauthorized", "forbidden"))
    # Expired: 401 for the same secret.
    assert wharf.api("PATCH", "/robots/robot$ci-pusher", json={"expiresAt": "2021-01-01T00:00:00Z"}).status_code == 200
    expired = skopeo("inspect", "--tls-verify=false", "--creds", creds, f"docker://{wharf.host}/robots/app:1", check=False)
    assert expired.returncode != 0 and "unauthorized" in expired.stderr.lower()
    assert requests.get(f"{wharf.url}/v2/", auth=(robot["name"], robot["secret"])).status_code == 401


def test_wrong_password_and_anonymous_access(wharf, small_image):
    wrong = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "admin:wrong-password", f"oci:{small_image}",
                   f"docker://{wharf.host}/private/app:1", check=False)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{small_image}", f"docker://{wharf.host}/private/app:1")
    # No credentials: private is refused, nothing anonymous happens by default.
    anonymous = skopeo("inspect", "--tls-verify=false", "--no-creds", f"docker://{wharf.host}/private/app:1", check=False)
    assert anonymous.returncode != 0
    # A namespace made public is pullable anonymously, and only pullable.
    assert wharf.api("POST", "/namespaces", json={"name": "opensource", "public": True}).status_code == 201
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{small_image}", f"docker://{wharf.host}/opensource/app:1")
    skopeo("inspect", "--tls-verify=false", "--no-creds", f"docker://{wharf.host}/opensource/app:1")
    push = skopeo("copy", "--dest-tls-verify=false", "--dest-no-creds", f"oci:{small_image}",
                  f"docker://{wharf.host}/opensource/app:2", check=False)
    assert push.returncode != 0


def test_catalog_shows_only_what_the_caller_may_pull(wharf, small_image):
    assert wharf.api("POST", "/users", json={"name": "viewer", "password": "viewer-password-1"}).status_code == 201
    assert wharf.api("POST", "/namespaces", json={"name": "visible"}).status_code == 201
    assert wharf.api("PUT", "/namespaces/visible/members/viewer", json={"role": "reader"}).status_code == 204
    for repository in ["visible/app", "hidden/app"]:
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", wharf.creds, f"oci:{small_image}", f"docker://{wharf.host}/{repository}:1")
    catalog = requests.get(f"{wharf.url}/v2/_catalog", auth=("viewer", "viewer-password-1")).json()["repositories"]
    assert "visible/app" in catalog and "hidden/app" not in catalog
    everything = requests.get(f"{wharf.url}/v2/_catalog", auth=wharf.auth).json()["repositories"]
    assert {"visible/app", "hidden/app"} <= set(everything)


def test_openapi_document_is_valid(wharf):
    document = requests.get(f"{wharf.url}/api/v1/openapi.json").json()
    validate(document)
    assert "/namespaces/{name}/members/{user}" in document["paths"]


def test_admin_cli(wharf, wharf_bin, small_image):
    env = {"WHARF_SERVER": wharf.url, "WHARF_PASSWORD": wharf.auth[1]}

    def cli(*args, input=None, check=True):
        return run([wharf_bin, "admin", *args], env=env, input=input, check=check)

    cli("user", "create", "cli-user", "--new-password-stdin", input="cli-user-password\n")
    assert "cli-user" in cli("user", "list").stdout
    cli("namespace", "create", "clins")
    cli("member", "set", "clins", "cli-user", "developer")
    assert "developer" in cli("member", "list", "clins").stdout
    robot = cli("robot", "create", "cli-bot", "--permission", "namespace:clins:pull,push").stdout
    secret = next(line.split(": ", 1)[1] for line in robot.splitlines() if line.startswith("secret"))
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"robot$cli-bot:{secret}", f"oci:{small_image}", f"docker://{wharf.host}/clins/app:1")
    token = cli("token", "create", "ci", "--user", "cli-user").stdout.split(": ", 1)[1].strip()
    assert token.startswith("wharf_pat_")
    skopeo("inspect", "--tls-verify=false", "--creds", f"cli-user:{token}", f"docker://{wharf.host}/clins/app:1")
    # JSON output and JSON-lines export.
    users = json.loads(cli("user", "list", "--json").stdout)
    assert any(u["name"] == "cli-user" for u in users)
    lines = cli("audit", "--json-lines", "--namespace", "clins").stdout.strip().splitlines()
    actions = {json.loads(line)["action"] for line in lines}
    assert {"namespace.create", "namespace.member.set", "push"} <= actions
    # Errors: a clear message and a non-zero exit.
    missing = cli("user", "delete", "no-such-user", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    wrong = run([wharf_bin, "admin", "user", "list"], env={**env, "WHARF_PASSWORD": "wrong"}, check=False)
    assert wrong.returncode != 0 and "401" in wrong.stderr


def test_users_migrate_from_a_distribution_htpasswd(wharf, wharf_bin, small_image, tmp_path):
    """An htpasswd file as CNCF Distribution reads it (made by htpasswd itself): bcrypt users come
    over with their passwords; entries Distribution would refuse are reported and skipped."""
    htpasswd = tmp_path / "htpasswd"
    run(["htpasswd", "-Bbc", str(htpasswd), "migrated", "migrated-password-1"])
    run(["htpasswd", "-Bb", "-C", "10", str(htpasswd), "second", "second-password-1"])
    run(["htpasswd", "-mb", str(htpasswd), "legacy", "legacy-password-1"])  # MD5: Distribution refuses it too
    with htpasswd.open("a") as file:
        file.write("\n# a comment\nnot-a-valid-line\n")
    env = {"WHARF_SERVER": wharf.url, "WHARF_PASSWORD": wharf.auth[1]}
    imported = run([wharf_bin, "admin", "user", "import-htpasswd", str(htpasswd), "--admin"], env=env)
    out = imported.stdout
    assert "migrated: imported" in out and "second: imported" in out
    assert "legacy: skipped, not a bcrypt hash" in out and "skipped, not name:hash" in out
    assert "2 imported, 2 skipped" in out
    # The migrated user signs in with the old password and pushes with skopeo; a wrong one is refused.
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "migrated:migrated-password-1",
           f"oci:{small_image}", f"docker://{wharf.host}/migration/app:1")
    assert requests.get(f"{wharf.url}/v2/", auth=("second", "second-password-1")).status_code == 200
    assert requests.get(f"{wharf.url}/v2/", auth=("migrated", "wrong-password-1")).status_code == 401
    assert requests.get(f"{wharf.url}/v2/", auth=("legacy", "legacy-password-1")).status_code == 401
    # Importing again changes nothing and says so.
    again = run([wharf_bin, "admin", "user", "import-htpasswd", str(htpasswd)], env=env, check=False)
    assert again.returncode != 0 and "migrated: skipped, 409" in again.stdout
    audit = wharf.api("GET", "/audit?action=user.import").json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    assert {e["target"] for e in entries} >= {"migrated", "second"}
