#!/bin/sh
# registry-token-exchange-credential-provider.sh: a kubelet image credential provider exec plugin
# (KEP-2133, KEP-4412) in POSIX sh + curl, with the same contract as
# `registry-token-exchange credential-provider`:
#
#   registry-token-exchange-credential-provider.sh --url URL [--ca-file FILE] [--timeout SECONDS]
#                                                  [--attempt-timeout SECONDS]
#
#   stdin   the CredentialProviderRequest kubelet writes (credentialprovider.kubelet.k8s.io/v1)
#   stdout  the CredentialProviderResponse of POST <URL>/v1/credential-provider, as the service sent it
#   stderr  one line naming the reason, on failure
#   exit    0 success, 1 failure, 2 usage
#
# Transient failures (connection refused or reset, timeouts, HTTP 429 and 5xx) are retried with
# exponential back-off (1, 2, 4, 5, 5... s; a longer Retry-After wins) until --timeout seconds have passed
# in total (default 50: kubelet kills exec plugins after 60 s); each attempt gets at most
# --attempt-timeout seconds (default 10). Anything else fails at once; a certificate that is not trusted
# names the option that fixes it (--ca-file), in the same words as the Node plugin. The request (it holds the pod's
# service-account token) goes to curl on a file in a private temporary directory, never on the command
# line, and is removed on exit. Standard input is read up to 1 MiB (a larger one fails); numbers are read
# as decimal ("08" is 8).
set -u

prog=registry-token-exchange-credential-provider

fail() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 1
}

usage() {
  printf '%s: %s (usage: %s --url URL [--ca-file FILE] [--timeout SECONDS] [--attempt-timeout SECONDS])\n' \
    "$prog" "$*" "$prog" >&2
  exit 2
}

is_seconds() {
  case $1 in
    '' | *[!0-9]*) return 1 ;;
  esac
  [ "$1" -gt 0 ] && [ "$1" -le 600 ]
}

# Prints a string of digits as a decimal number without leading zeros: shell arithmetic reads a leading 0
# as octal ("08" is an error, "010" is 8), the Node plugin reads decimal.
decimal() {
  d=$1
  while :; do
    case $d in
      0?*) d=${d#0} ;;
      *) break ;;
    esac
  done
  printf '%s' "$d"
}

url=""
ca_file=""
timeout=50
attempt_timeout=10
while [ $# -gt 0 ]; do
  case $1 in
    --url | --ca-file | --timeout | --attempt-timeout)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case $1 in
        --url) url=$2 ;;
        --ca-file) ca_file=$2 ;;
        --timeout) timeout=$2 ;;
        --attempt-timeout) attempt_timeout=$2 ;;
      esac
      shift 2
      ;;
    --url=*) url=${1#--url=}; shift ;;
    --ca-file=*) ca_file=${1#--ca-file=}; shift ;;
    --timeout=*) timeout=${1#--timeout=}; shift ;;
    --attempt-timeout=*) attempt_timeout=${1#--attempt-timeout=}; shift ;;
    # An unknown argument is named only when it is a short option: anything else could be a credential
    # pasted in the wrong place, and kubelet's log would keep it.
    --*=*) usage "unknown option: ${1%%=*}" ;;
    --*)
      [ ${#1} -gt 40 ] || usage "unknown option: $1"
      usage "unknown argument (not shown: it could be a credential)"
      ;;
    *) usage "unknown argument (not shown: it could be a credential)" ;;
  esac
done

[ -n "$url" ] || usage "--url is required"
case $url in
  http://*@* | https://*@*) usage "--url must not carry credentials" ;;
  *'?'* | *'#'*) usage "--url must not carry a query or fragment" ;;
  http://?* | https://?*) ;;
  *) usage "--url must be an absolute http(s) URL" ;;
esac
is_seconds "$timeout" || usage "--timeout must be whole seconds in 1..600"
is_seconds "$attempt_timeout" || usage "--attempt-timeout must be whole seconds in 1..600"
timeout=$(decimal "$timeout")
attempt_timeout=$(decimal "$attempt_timeout")
command -v curl >/dev/null 2>&1 || fail "curl is not installed"
if [ -n "$ca_file" ] && [ ! -r "$ca_file" ]; then
  fail "--ca-file $ca_file: not readable"
fi

while :; do
  case $url in
    */) url=${url%/} ;;
    *) break ;;
  esac
done
endpoint="$url/v1/credential-provider"

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rte-credential-provider.XXXXXX") || fail "cannot create a temporary directory"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# At most MAX_PLUGIN_BYTES (1 MiB, as the Node plugin): read one byte more to tell a larger stdin apart.
max_stdin=1048576
head -c $((max_stdin + 1)) >"$tmp/request" || fail "cannot read stdin"
[ "$(wc -c <"$tmp/request")" -le "$max_stdin" ] || fail "stdin is larger than $max_stdin bytes"
[ -s "$tmp/request" ] || fail "stdin is empty: expected a CredentialProviderRequest from kubelet"
grep -q '"kind"[[:space:]]*:[[:space:]]*"CredentialProviderRequest"' "$tmp/request" ||
  fail "stdin is not a CredentialProviderRequest"

# A JSON string field of the error body (one line: {"errors":[{"code":..,"message":"..","detail":{"reason":".."}}]}),
# with \" and \\ unescaped.
json_field() {
  sed -n -E 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"(([^"\\]|\\.)*)".*/\1/p' "$tmp/body" 2>/dev/null |
    head -n 1 | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g'
}

# ": <message> (<reason>)" after the status, with the error's code in between (" DENIED"): the same
# words the Node plugin prints.
error_text() {
  message=$(json_field message)
  reason=$(json_field reason)
  code=$(json_field code)
  if [ -n "$message" ]; then
    [ -z "$code" ] || printf ' %s' "$code"
    printf ': %s' "$message"
    [ -z "$reason" ] || printf ' (%s)' "$reason"
  fi
}

# The sentence for a certificate verification failure of curl (exit 60), as the Node plugin words it
# (src/authn/tls-advice.ts); empty when curl's message is not one of them.
tls_advice() {
  subject="the service's certificate"
  case $(tr 'A-Z' 'a-z' <"$tmp/curl.err") in
    *self-signed\ certificate* | *self\ signed\ certificate*)
      printf 'TLS: %s is self-signed and not trusted: set --ca-file to that certificate (or to the CA that signed it)' "$subject" ;;
    *unable\ to\ get\ local\ issuer\ certificate* | *unable\ to\ get\ issuer\ certificate* | *unable\ to\ verify\ the\ first\ certificate*)
      printf "TLS: %s is signed by a CA that is not trusted: set --ca-file to that CA's certificate" "$subject" ;;
    *certificate\ has\ expired* | *certificate\ is\ not\ yet\ valid*)
      printf 'TLS: %s has expired or is not yet valid: renew it (--ca-file cannot fix this)' "$subject" ;;
    *subject\ name* | *does\ not\ match\ target\ host*)
      printf 'TLS: %s does not name the host connected to: use a host name the certificate names' "$subject" ;;
  esac
}

start=$(date +%s)
deadline=$((start + timeout))
attempt=0
delay=1
last="no attempt made"
while :; do
  now=$(date +%s)
  remaining=$((deadline - now))
  [ "$remaining" -gt 0 ] || break
  attempt=$((attempt + 1))
  budget=$attempt_timeout
  [ "$budget" -le "$remaining" ] || budget=$remaining
  rm -f "$tmp/body" "$tmp/headers" "$tmp/curl.err"
  set -- --silent --show-error --request POST --max-time "$budget" --connect-timeout "$budget" \
    --header 'Content-Type: application/json' --header 'Accept: application/json' --header 'Expect:' \
    --user-agent "$prog" --data-binary "@$tmp/request" \
    --output "$tmp/body" --dump-header "$tmp/headers" --write-out '%{http_code}'
  [ -z "$ca_file" ] || set -- "$@" --cacert "$ca_file"
  status=$(curl "$@" "$endpoint" 2>"$tmp/curl.err")
  rc=$?
  retry_after=""
  if [ "$rc" -ne 0 ]; then
    # 7 connect failed, 28 timed out, 52 empty reply, 55/56 send/receive failed: worth another attempt.
    # 6 (unknown host), 35/60 (TLS) and the rest are configuration problems: fail now.
    case $rc in
      7 | 28 | 52 | 55 | 56) transient=1 ;;
      *) transient=0 ;;
    esac
    last="curl exit $rc: $(head -n 1 "$tmp/curl.err" | tr -d '\r')"
    if [ "$rc" -eq 60 ] || [ "$rc" -eq 35 ]; then
      advice=$(tls_advice)
      [ -z "$advice" ] || last=$advice
    fi
  else
    case $status in
      200)
        grep -q '"kind"[[:space:]]*:[[:space:]]*"CredentialProviderResponse"' "$tmp/body" ||
          fail "$endpoint: the service answered something other than a CredentialProviderResponse"
        cat "$tmp/body"
        exit 0
        ;;
      429 | 5??) transient=1 ;;
      *) transient=0 ;;
    esac
    last="HTTP $status$(error_text)"
    retry_after=$(tr -d '\r' <"$tmp/headers" | sed -n 's/^[Rr][Ee][Tt][Rr][Yy]-[Aa][Ff][Tt][Ee][Rr]:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*$/\1/p' | tail -n 1)
  fi
  [ "$transient" -eq 1 ] || fail "$endpoint: $last"
  wait=$delay
  if [ -n "$retry_after" ] && [ "$retry_after" -gt "$wait" ]; then
    wait=$retry_after
    [ "$wait" -le 10 ] || wait=10
  fi
  now=$(date +%s)
  [ $((now + wait)) -lt "$deadline" ] || break
  sleep "$wait"
  delay=$((delay * 2))
  [ "$delay" -le 5 ] || delay=5
done
fail "$endpoint: gave up after $attempt attempt(s) in $(($(date +%s) - start)) s: $last"
