"""A real Docker engine (Debian's docker.io), run privately: push, pull, build and push."""

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import run, skopeo


def docker_cmd(env, *args, **kwargs):
    return run(["docker", *args], env=env, **kwargs)


@pytest.fixture(scope="module")
def base_image(docker, debian_image, tmp_path_factory, wharf):
    """The Debian test image, loaded into the engine and pushed to Wharf by docker (after docker login)."""
    wrong = run(["docker", "login", "-u", "admin", "--password-stdin", wharf.host], env=docker, input="wrong-password\n", check=False)
    assert wrong.returncode != 0
    run(["docker", "login", "-u", wharf.auth[0], "--password-stdin", wharf.host], env=docker, input=wharf.auth[1] + "\n")
    archive = tmp_path_factory.mktemp("archive") / "debian.tar"
    skopeo("copy", f"oci:{debian_image}", f"docker-archive:{archive}:wharf-e2e/debian:base")
    docker_cmd(docker, "load", "-i", archive)
    target = f"{wharf.host}/e2e/docker-debian:base"
    docker_cmd(docker, "tag", "wharf-e2e/debian:base", target)
    docker_cmd(docker, "push", target)
    return target


def test_docker_push_and_pull(docker, base_image, wharf):
    served = requests.get(
        f"{wharf.url}/v2/e2e/docker-debian/manifests/base",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, auth=wharf.auth,
    )
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    digest = served.headers["Docker-Content-Digest"]
    docker_cmd(docker, "rmi", "-f", base_image, "wharf-e2e/debian:base")
    docker_cmd(docker, "pull", base_image)
    inspected = json.loads(docker_cmd(docker, "image", "inspect", base_image).stdout)[0]
    assert f"{wharf.host}/e2e/docker-debian@{digest}" in inspected["RepoDigests"]
    # Pull by digest too.
    docker_cmd(docker, "pull", f"{wharf.host}/e2e/docker-debian@{digest}")


def test_docker_build_and_push(docker, base_image, wharf, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from docker build\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\n")
    target = f"{wharf.host}/e2e/docker-built:1"
    run(["docker", "build", "--network", "none", "-t", target, tmp_path], env={**docker, "DOCKER_BUILDKIT": "0"})
    push = docker_cmd(docker, "push", target)
    # The base layers came over by cross-repository mount, not a second upload.
    assert "Mounted from e2e/docker-debian" in push.stdout
    docker_cmd(docker, "rmi", "-f", target)
    docker_cmd(docker, "pull", target)
    output = docker_cmd(docker, "run", "--rm", "--network", "none", target, "cat", "/built.txt", "/hello.txt").stdout
    assert output == "built\nhello from docker build\n"
    tags = requests.get(f"{wharf.url}/v2/e2e/docker-built/tags/list", auth=wharf.auth).json()
    assert tags == {"name": "e2e/docker-built", "tags": ["1"]}


def test_docker_login_with_ecr_authorization_token(docker, base_image, wharf):
    """`aws ecr get-login-password | docker login --username AWS --password-stdin` and then push and pull."""
    key = wharf.api("POST", "/users/admin/access-keys", json={"description": "docker e2e"}).json()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(docker, AWS_ACCESS_KEY_ID=key["accessKeyId"], AWS_SECRET_ACCESS_KEY=key["secretAccessKey"], AWS_ENDPOINT_URL_ECR=wharf.url,
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    run(["aws", "ecr", "create-repository", "--region", "us-east-1", "--repository-name", "ecr-docker/app"], env=env)
    login = run(["bash", "-c", f"set -o pipefail; aws ecr get-login-password --region us-east-1 | docker login --username AWS --password-stdin {wharf.host}"], env=env)
    assert "Login Succeeded" in login.stdout
    config = json.loads((Path(docker["DOCKER_CONFIG"]) / "config.json").read_text())
    assert base64.b64decode(config["auths"][wharf.host]["auth"]).decode().startswith("AWS:")
    target = f"{wharf.host}/ecr-docker/app:1"
    docker_cmd(docker, "tag", base_image, target)
    docker_cmd(docker, "push", target)
    docker_cmd(docker, "rmi", "-f", target)
    docker_cmd(docker, "pull", target)
    listed = json.loads(run(["aws", "ecr", "list-images", "--region", "us-east-1", "--repository-name", "ecr-docker/app", "--output", "json"], env=env).stdout)
    assert [i["imageTag"] for i in listed["imageIds"]] == ["1"]
    # A made-up token is refused.
    wrong = run(["docker", "login", "--username", "AWS", "--password-stdin", wharf.host], env=docker, input="d2hhcmZfZWNyX2Zha2U=\n", check=False)
    assert wrong.returncode != 0
