#!/usr/bin/env bash
# A private S3 API (moto's server, from PyPI `moto[server]`) for tests, on a free 127.0.0.1 port,
# with SigV4 checking ON: requests signed with anything but the key printed here are refused.
#   scripts/s3.sh start DIR   prints `export WHARF_TEST_S3_…=…` lines for eval (endpoint, keys, bucket)
#   scripts/s3.sh stop DIR
set -euo pipefail
command=${1:?start or stop}
dir=${2:?folder for the pid file and the log}

if [ "$command" = start ]; then
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # moto checks signatures once its first N calls are spent: exactly the three that make the key.
  INITIAL_NO_AUTH_ACTION_COUNT=3 nohup moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  python3 - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/moto-api/"
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("moto_server did not start within 30 s")
PY
  python3 - "$port" <<'PY'
import json, sys, boto3
endpoint = f"http://127.0.0.1:{sys.argv[1]}"
anonymous = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **anonymous)
iam.create_user(UserName="wharf")
iam.put_user_policy(UserName="wharf", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="wharf")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket="wharf-test")
print(f"export WHARF_TEST_S3_ENDPOINT={endpoint}")
print(f"export WHARF_TEST_S3_ACCESS_KEY={key['AccessKeyId']}")
print(f"export WHARF_TEST_S3_SECRET_KEY={key['SecretAccessKey']}")
print("export WHARF_TEST_S3_BUCKET=wharf-test")
PY
elif [ "$command" = stop ]; then
  if [ -f "$dir/moto.pid" ]; then kill "$(cat "$dir/moto.pid")" 2>/dev/null || true; fi
else
  echo "usage: $0 start|stop DIR" >&2; exit 2
fi
