#!/usr/bin/env bash
# Drives hsmgate's XKS proxy API with curl's own SigV4 signer, as a user of
# AWS's "External Key Store Proxy API Specification" would ("Troubleshooting",
# "Appendix D": curl 7.75 or later, --aws-sigv4 "aws:amz:REGION:kms-xks-proxy").
#
# Environment:
#   XKS_ENDPOINT       https://host:port
#   XKS_URI_PATH       the store's XksProxyUriPath, e.g. /keystores/s1/kms/xks/v1
#   ACCESS_KEY_ID      SECRET_ACCESS_KEY      a credential of the store
#   ACCESS_KEY_ID_2    SECRET_ACCESS_KEY_2    optional: a second one (rotation)
#   XKS_KEY_ID         an external key with ENCRYPT and DECRYPT
#   REGION             the region to sign for (default us-east-1)
#   CACERT             optional: the CA file that signs the server's certificate
#
# It prints one line per check and exits non-zero when any check fails.
# Needs bash, curl, base64, sha256sum, od, head, sed and tr.
set -u -o pipefail

: "${XKS_ENDPOINT:?}" "${XKS_URI_PATH:?}" "${ACCESS_KEY_ID:?}" "${SECRET_ACCESS_KEY:?}" "${XKS_KEY_ID:?}"
REGION=${REGION:-us-east-1}
BASE=$XKS_ENDPOINT$XKS_URI_PATH
TLS_OPTS=()
if [[ -n ${CACERT:-} ]]; then
    TLS_OPTS=(--cacert "$CACERT")
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

# xks METHOD URI BODYFILE [AKID SECRET]: sends one signed request; the
# response body lands in $work/out and the HTTP status in $status.
xks() {
    local method=$1 uri=$2 body=$3 akid=${4:-$ACCESS_KEY_ID} secret=${5:-$SECRET_ACCESS_KEY}
    status=$(curl --silent --show-error "${TLS_OPTS[@]}" \
        --aws-sigv4 "aws:amz:$REGION:kms-xks-proxy" --user "$akid:$secret" \
        -X "$method" -H "Content-Type: application/json" \
        --data-binary "@$body" -o "$work/out" -w '%{http_code}' "$uri")
}

# field NAME: a string member of the last response (compact JSON).
field() { sed -n 's/.*"'"$1"'":"\([^"]*\)".*/\1/p' "$work/out"; }

# expect CHECK STATUS PATTERN: the last response had STATUS and matches PATTERN.
expect() {
    if [[ $status == "$2" ]] && grep -q -- "$3" "$work/out"; then
        pass "$1"
    else
        fail "$1" "HTTP $status, body $(head -c 300 "$work/out")"
    fi
}

b64() { base64 -w 0; }
unb64() { printf '%s' "$1" | base64 -d; }
hex() { od -An -v -tx1 | tr -d ' \n'; }

metadata() {
    printf '"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:%s:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"%s","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsViaService":"ebs"}' "$REGION" "$1"
}

# encrypt_body PLAINTEXT_B64 [AAD_B64] [CDIV]
encrypt_body() {
    local aad="" cdiv=""
    [[ -n ${2:-} ]] && aad=",\"additionalAuthenticatedData\":\"$2\""
    [[ -n ${3:-} ]] && cdiv=',"ciphertextDataIntegrityValueAlgorithm":"SHA_256"'
    printf '{%s,"plaintext":"%s","encryptionAlgorithm":"AES_GCM"%s%s}' "$(metadata Encrypt)" "$1" "$aad" "$cdiv"
}

# decrypt_body AAD_B64, from the last Encrypt response's fields.
decrypt_body() {
    local aad="" cm
    [[ -n ${1:-} ]] && aad=",\"additionalAuthenticatedData\":\"$1\""
    cm=$(field ciphertextMetadata)
    [[ -n $cm ]] && cm=",\"ciphertextMetadata\":\"$cm\""
    printf '{%s,"ciphertext":"%s","initializationVector":"%s","authenticationTag":"%s","encryptionAlgorithm":"AES_GCM"%s%s}' \
        "$(metadata Decrypt)" "$(field ciphertext)" "$(field initializationVector)" "$(field authenticationTag)" "$cm" "$aad"
}

# round_trip NAME PLAINTEXT_B64 AAD_B64 [CDIV]: encrypt, check the CDIV if
# asked for (Appendix C), decrypt, compare.
round_trip() {
    local name=$1 pt=$2 aad=$3 cdiv=${4:-}
    encrypt_body "$pt" "$aad" "$cdiv" > "$work/enc.json"
    xks POST "$BASE/keys/$XKS_KEY_ID/encrypt" "$work/enc.json"
    if [[ $status != 200 ]]; then
        fail "$name: encrypt" "HTTP $status, body $(head -c 300 "$work/out")"
        return
    fi
    if [[ -n $cdiv ]]; then
        local want got
        want=$({ unb64 "$aad"; unb64 "$(field ciphertextMetadata)"; unb64 "$(field initializationVector)"
                 unb64 "$(field ciphertext)"; unb64 "$(field authenticationTag)"; } | sha256sum | cut -d' ' -f1)
        got=$(unb64 "$(field ciphertextDataIntegrityValue)" | hex)
        if [[ -n $got && $got == "$want" ]]; then pass "$name: CDIV"; else fail "$name: CDIV" "got '$got', want '$want'"; fi
    fi
    decrypt_body "$aad" > "$work/dec.json"
    cp "$work/out" "$work/encrypted.json"
    xks POST "$BASE/keys/$XKS_KEY_ID/decrypt" "$work/dec.json"
    if [[ $status == 200 && $(field plaintext) == "$pt" ]]; then
        pass "$name: decrypt"
    else
        fail "$name: decrypt" "HTTP $status, body $(head -c 300 "$work/out")"
    fi
}

# GetHealthStatus
printf '{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}' > "$work/health.json"
xks POST "$BASE/health" "$work/health.json"
expect "GetHealthStatus" 200 '"healthStatus":"ACTIVE"'
expect "GetHealthStatus fleet size" 200 '"xksProxyFleetSize":[1-9]'

# GetKeyMetadata
printf '{%s}' "$(metadata DescribeKey)" > "$work/md.json"
xks POST "$BASE/keys/$XKS_KEY_ID/metadata" "$work/md.json"
expect "GetKeyMetadata" 200 '"keySpec":"AES_256".*"keyStatus":"ENABLED"'

# Encrypt and Decrypt.
hello=$(printf 'Hello World!' | b64)
aad=$(printf 'project=nile,department=marketing' | b64)
round_trip "no AAD" "$hello" ""
round_trip "AAD and CDIV" "$hello" "$aad" cdiv
round_trip "CDIV without AAD" "$hello" "" cdiv
round_trip "4300 bytes, 8192 bytes of AAD" "$(head -c 4300 /dev/urandom | b64)" "$(head -c 8192 /dev/urandom | b64)" cdiv

# The last ciphertext with other AAD.
cp "$work/encrypted.json" "$work/out"
decrypt_body "$aad" > "$work/dec.json"
xks POST "$BASE/keys/$XKS_KEY_ID/decrypt" "$work/dec.json"
expect "Decrypt with other AAD" 400 '"errorName":"InvalidCiphertextException"'

# The second credential of a rotation.
if [[ -n ${ACCESS_KEY_ID_2:-} ]]; then
    xks POST "$BASE/health" "$work/health.json" "$ACCESS_KEY_ID_2" "$SECRET_ACCESS_KEY_2"
    expect "second credential" 200 '"ekmFleetDetails"'
fi

# Errors.
xks POST "$BASE/health" "$work/health.json" "$ACCESS_KEY_ID" "${SECRET_ACCESS_KEY}x"
expect "wrong secret" 401 '"errorName":"AuthenticationFailedException"'
xks POST "$BASE/health" "$work/health.json" "INVALID$ACCESS_KEY_ID" "$SECRET_ACCESS_KEY"
expect "unknown access key id" 401 '"errorName":"AuthenticationFailedException"'
xks POST "${XKS_ENDPOINT}${XKS_URI_PATH%/kms/xks/v1}/invalid/kms/xks/v1/health" "$work/health.json"
expect "invalid URI path" 404 '"errorName":"InvalidUriPathException"'
xks POST "$BASE/keys/no-such-key/metadata" "$work/md.json"
expect "unknown key" 404 '"errorName":"KeyNotFoundException"'
printf '{%s,"encryptionAlgorithm":"AES_GCM"}' "$(metadata Encrypt)" > "$work/bad.json"
xks POST "$BASE/keys/$XKS_KEY_ID/encrypt" "$work/bad.json"
expect "missing plaintext" 400 '"errorName":"ValidationException"'
printf '{}' > "$work/empty.json"
xks POST "$BASE/keys/$XKS_KEY_ID/metadata" "$work/empty.json"
expect "no requestMetadata" 400 '"errorName":"ValidationException"'
xks GET "$BASE/keys/$XKS_KEY_ID/metadata" "$work/md.json"
expect "GET is not allowed" 405 ''

echo "curl checks: $passed passed checks, $failed failed checks"
[[ $failed == 0 ]]
