package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// `hsmgate apply` against a running gateway: plan, create, no-op, change,
// delete, cancel a deletion, and files that must change nothing.
func TestApply(t *testing.T) {
	data, endpoint, _ := initGateway(t, 2)
	// A copy of testdata/apply to edit.
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", "apply"), dir)
	file := filepath.Join(dir, "keys.toml")
	apply := func(args ...string) result {
		t.Helper()
		return hsmgate(t, nil, append([]string{"--data", data, "apply"}, args...)...)
	}

	// No gateway runs yet.
	if r := apply("--plan", file); r.code != 1 || !strings.Contains(r.stderr, "could not be reached") || !strings.Contains(r.stderr, "hsmgate serve") {
		t.Errorf("apply without a running gateway: exit %d", r.code)
	}

	roots := caPool(t, filepath.Join(data, "pki", "ca.pem"))
	srv := startServe(t, data)
	srv.waitReady(t, endpoint, roots)
	akid, secret := readAdminCredentials(t, data)
	c := kmsClient(endpoint, "us-east-1", akid, secret, roots)
	ctx := context.Background()

	// The plan creates the three keys, and changes nothing.
	r := apply("--plan", file)
	wantLines(t, "apply --plan of a new file", r, 0, []string{
		"+ create key alias/payments (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT; tags cost-center=cc-42,env=prod,team=payments; key policy from policy_file policies/payments.json)",
		"+ alias alias/payments-v2 -> alias/payments",
		"~ rotation alias/payments: off -> every 180 days",
		"+ create key alias/webhooks (HMAC_256, GENERATE_VERIFY_MAC; tags team=platform)",
		"+ create key alias/signing (ECC_NIST_P256, SIGN_VERIFY)",
	})
	if !strings.Contains(r.stdout, "Plan: 5 changes. Run without --plan to make them.\n") {
		t.Errorf("apply --plan: no summary")
	}
	for _, a := range []string{"alias/payments", "alias/payments-v2", "alias/webhooks", "alias/signing"} {
		if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(a)}); !isNotFound(err) {
			t.Errorf("after apply --plan, DescribeKey %s: %v, want NotFoundException", a, err)
		}
	}

	// Apply creates them, printing the same lines with the new key ids.
	r = apply(file)
	if r.code != 0 || !strings.Contains(r.stdout, "Applied 5 changes.\n") {
		t.Fatalf("apply: exit %d", r.code)
	}
	payments := describe(t, c, "alias/payments")
	webhooks := describe(t, c, "alias/webhooks")
	signing := describe(t, c, "alias/signing")
	if !strings.Contains(r.stdout, "+ create key alias/webhooks (HMAC_256, GENERATE_VERIFY_MAC; tags team=platform): key "+aws.ToString(webhooks.KeyId)+"\n") {
		t.Errorf("apply did not print the created key's id")
	}
	for _, k := range []struct {
		meta        *types.KeyMetadata
		spec, usage string
		desc        string
		tags        map[string]string
		aliases     []string
		rotation    int32
	}{
		{payments, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Payments data keys", map[string]string{"team": "payments", "env": "prod", "cost-center": "cc-42"},
			[]string{"alias/payments", "alias/payments-v2"}, 180},
		{webhooks, "HMAC_256", "GENERATE_VERIFY_MAC", "Webhook signatures", map[string]string{"team": "platform"}, []string{"alias/webhooks"}, 0},
		{signing, "ECC_NIST_P256", "SIGN_VERIFY", "", map[string]string{}, []string{"alias/signing"}, 0},
	} {
		id := aws.ToString(k.meta.KeyId)
		if string(k.meta.KeySpec) != k.spec || string(k.meta.KeyUsage) != k.usage || aws.ToString(k.meta.Description) != k.desc || k.meta.KeyState != types.KeyStateEnabled {
			t.Errorf("key %s: %s %s %q %s, want %s %s %q Enabled", id, k.meta.KeySpec, k.meta.KeyUsage, aws.ToString(k.meta.Description), k.meta.KeyState, k.spec, k.usage, k.desc)
		}
		if got := tagsOf(t, c, id); !maps.Equal(got, k.tags) {
			t.Errorf("key %s: tags %v, want %v", id, got, k.tags)
		}
		if got := aliasesOf(t, c, id); !slices.Equal(got, k.aliases) {
			t.Errorf("key %s: aliases %v, want %v", id, got, k.aliases)
		}
		if k.spec == "SYMMETRIC_DEFAULT" {
			if got := rotationOf(t, c, id); got != k.rotation {
				t.Errorf("key %s: rotation every %d days, want %d", id, got, k.rotation)
			}
		}
	}
	pol, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: payments.KeyId, PolicyName: aws.String("default")})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "policies", "payments.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(aws.ToString(pol.Policy), string(want)) {
		t.Errorf("alias/payments's key policy is\n%s\nwant policies/payments.json", aws.ToString(pol.Policy))
	}

	// Again: nothing to do.
	for _, args := range [][]string{{file}, {"--plan", file}} {
		if r := apply(args...); r.code != 0 || r.stdout != "No changes.\n" {
			t.Errorf("apply %v of an applied file: exit %d, want only No changes.", args, r.code)
		}
	}

	// The file changes: a tag changed and one gone, a description, the
	// rotation period, a key disabled and one deleted.
	edit(t, file,
		`description = "Payments data keys"`, `description = "Payments data keys (v2)"`,
		`rotation_days = 180`, `rotation_days = 365`,
		`tags = { team = "payments", env = "prod", cost-center = "cc-42" }`, `tags = { team = "billing", env = "prod" }`,
		`spec = "HMAC_256"`, "spec = \"HMAC_256\"\ndelete = true\npending_window_days = 7",
		`usage = "SIGN_VERIFY"`, "usage = \"SIGN_VERIFY\"\nenabled = false",
	)
	changed := []string{
		`~ description alias/payments: "Payments data keys" -> "Payments data keys (v2)"`,
		"~ tags alias/payments: ~team=billing (was payments) -cost-center",
		"~ rotation alias/payments: every 180 days -> every 365 days",
		"~ disable key alias/signing",
		"- schedule deletion of alias/webhooks (key " + aws.ToString(webhooks.KeyId) + ") in 7 days",
	}
	wantLines(t, "apply --plan of the changed file", apply("--plan", file), 0, changed)
	if m := describe(t, c, "alias/payments"); aws.ToString(m.Description) != "Payments data keys" {
		t.Errorf("apply --plan changed the description")
	}
	r = apply(file)
	if r.code != 0 || !strings.Contains(r.stdout, "Applied 5 changes.\n") {
		t.Fatalf("apply of the changed file: exit %d", r.code)
	}
	for _, l := range changed {
		if !strings.Contains(r.stdout, l) {
			t.Errorf("apply did not print %q", l)
		}
	}
	if m := describe(t, c, "alias/payments"); aws.ToString(m.Description) != "Payments data keys (v2)" || m.KeyState != types.KeyStateEnabled {
		t.Errorf("alias/payments: %q %s", aws.ToString(m.Description), m.KeyState)
	}
	if got, want := tagsOf(t, c, aws.ToString(payments.KeyId)), map[string]string{"team": "billing", "env": "prod"}; !maps.Equal(got, want) {
		t.Errorf("alias/payments: tags %v, want %v", got, want)
	}
	if got := rotationOf(t, c, aws.ToString(payments.KeyId)); got != 365 {
		t.Errorf("alias/payments: rotation every %d days, want 365", got)
	}
	if m := describe(t, c, "alias/signing"); m.KeyState != types.KeyStateDisabled || m.Enabled {
		t.Errorf("alias/signing is %s, want Disabled", m.KeyState)
	}
	m := describe(t, c, "alias/webhooks")
	if m.KeyState != types.KeyStatePendingDeletion || aws.ToInt32(m.PendingDeletionWindowInDays) != 7 || m.DeletionDate == nil ||
		m.DeletionDate.Sub(time.Now().AddDate(0, 0, 7)).Abs() > time.Hour {
		t.Errorf("alias/webhooks: %s, window %d days, deletion %v; want PendingDeletion in 7 days", m.KeyState, aws.ToInt32(m.PendingDeletionWindowInDays), m.DeletionDate)
	}
	if r := apply(file); r.code != 0 || r.stdout != "No changes.\n" {
		t.Errorf("apply of the applied changed file: exit %d, want only No changes.", r.code)
	}

	// Declared again without delete = true, the key's deletion is
	// cancelled and it is enabled again.
	edit(t, file, "delete = true\n", "")
	r = apply("--plan", file)
	if r.code != 0 || !regexp.MustCompile(`(?m)^~ cancel deletion of alias/webhooks \(it was to be deleted on \d{4}-\d\d-\d\d\); the key is disabled until enabled\n~ enable key alias/webhooks\nPlan: 2 changes`).MatchString(r.stdout) {
		t.Errorf("apply --plan of a pending-deletion key declared without delete: exit %d", r.code)
	}
	if r := apply(file); r.code != 0 || !strings.Contains(r.stdout, "Applied 2 changes.\n") {
		t.Errorf("apply of the cancelled deletion: exit %d", r.code)
	}
	if m := describe(t, c, "alias/webhooks"); m.KeyState != types.KeyStateEnabled {
		t.Errorf("alias/webhooks is %s, want Enabled", m.KeyState)
	}
	if r := apply(file); r.code != 0 || r.stdout != "No changes.\n" {
		t.Errorf("apply after the cancelled deletion: exit %d, want only No changes.", r.code)
	}

	// Files that must change nothing: an unknown field or an invalid spec
	// (refused before the gateway is called), an existing key declared with
	// another spec (refused by the plan).
	for _, bad := range []struct{ file, want string }{
		{"unknown-field.toml", `unknown-field.toml:8: unknown field "colour" in a [[key]]`},
		{"bad-spec.toml", `bad-spec.toml:6: key alias/bad-spec: spec "AES_256" is not a key spec hsmgate offers`},
		{"spec-change.toml", "key alias/signing: alias/signing names key " + aws.ToString(signing.KeyId) + ", a ECC_NIST_P256 SIGN_VERIFY key, but the file declares HMAC_256 GENERATE_VERIFY_MAC: a key's spec and usage can't change"},
	} {
		for _, args := range [][]string{{"--plan", filepath.Join(dir, bad.file)}, {filepath.Join(dir, bad.file)}} {
			r := apply(args...)
			if r.code != 1 || !strings.Contains(r.stderr, bad.want) || !strings.Contains(r.stderr, "nothing was changed") || strings.Contains(r.stdout, "+ create") && len(args) == 1 {
				t.Errorf("apply %v: exit %d, want 1 and an error with %q", args, r.code, bad.want)
			}
		}
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/never-made")}); !isNotFound(err) {
		t.Errorf("a refused file made a key: DescribeKey alias/never-made: %v", err)
	}

	// A failure stops apply: what was done is printed, then what failed,
	// with the AWS error code.
	r = apply(filepath.Join(dir, "lockout.toml"))
	first, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/first")})
	if err != nil {
		t.Fatalf("the change before the failure was not made: %v", err)
	}
	if r.code != 1 || !strings.Contains(r.stdout, "+ create key alias/first (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT): key "+aws.ToString(first.KeyMetadata.KeyId)+"\nMade 1 change of 2, then stopped at a failure.\n") ||
		!strings.Contains(r.stderr, "apply: failed: + create key alias/locked-out (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT; key policy from policy): MalformedPolicyDocumentException: ") {
		t.Errorf("apply of a file whose second key fails: exit %d", r.code)
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/locked-out")}); !isNotFound(err) {
		t.Errorf("DescribeKey alias/locked-out: %v, want NotFoundException", err)
	}

	// Rotation changes while the key is enabled: before it is disabled;
	// on a key that stays disabled, it is an error.
	rot := filepath.Join(dir, "rotation.toml")
	if err := os.WriteFile(rot, []byte("[[key]]\nalias = \"alias/first\"\nrotation_days = 90\nenabled = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = apply(rot)
	wantLines(t, "apply of rotation and disable", r, 0, []string{"~ rotation alias/first: off -> every 90 days", "~ disable key alias/first"})
	if got := rotationOf(t, c, aws.ToString(first.KeyMetadata.KeyId)); got != 90 {
		t.Errorf("alias/first: rotation every %d days, want 90", got)
	}
	edit(t, rot, "rotation_days = 90", "rotation_days = 120")
	if r := apply(rot); r.code != 1 || !strings.Contains(r.stderr, "the KMS API changes rotation only on enabled keys") {
		t.Errorf("apply of a rotation change on a disabled key: exit %d", r.code)
	}

	// Keys the file doesn't mention were never touched.
	if m := describe(t, c, "alias/signing"); m.KeyState != types.KeyStateDisabled {
		t.Errorf("alias/signing is %s after files that don't name it", m.KeyState)
	}
}

// The file is checked in full before the gateway is called: every error at
// once, with file:line.
func TestApplyChecksTheFileFirst(t *testing.T) {
	data := writeFakeData(t, freeAddr(t), "us-east-1", strings.Repeat("s", 40))
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.toml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`
[[key]]
alias = "alias/a"
aliases = ["alias/b", "alias/a"]
spec = "HMAC_256"
rotation_days = 365

[[key]]
alias = "alias/b"
spec = "RSA_2048"
policy = "{ not json"
pending_window_days = 3

[[key]]
alias = "aws/c"
tags = { "aws:x" = "y" }
policy = "{}"
policy_file = "p.json"
`)
	r := hsmgate(t, nil, "--data", data, "apply", "--plan", file)
	for _, want := range []string{
		file + ":2: key alias/a: rotation_days: only symmetric encryption keys (SYMMETRIC_DEFAULT) rotate automatically, not HMAC_256 keys",
		file + ":2: key alias/a: alias alias/a is listed twice",
		file + ":8: key alias/b: usage is required for a RSA_2048 key: ENCRYPT_DECRYPT or SIGN_VERIFY",
		file + ":8: key alias/b: pending_window_days is 3: want 7 to 30",
		file + ":8: key alias/b: policy is not valid JSON",
		file + ":8: key alias/b: alias alias/b is also declared by key alias/a",
		file + `:14: key aws/c: alias "aws/c": want alias/`,
		file + `:14: key aws/c: tag key "aws:x": keys beginning with aws: are reserved`,
		file + ":14: key aws/c: set policy or policy_file, not both",
		"nothing was changed",
	} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("apply of a file with errors: exit %d, stderr lacks %q", r.code, want)
		}
	}

	// tags = {} is set (every tag goes); no tags leaves them alone.
	write("[[key]]\nalias = \"alias/a\"\ntags = {}\n[[key]]\nalias = \"alias/b\"\n")
	decls, err := loadApplyFile(file)
	if err != nil || len(decls) != 2 || decls[0].Tags == nil || decls[1].Tags != nil {
		t.Errorf("tags = {} and no tags: %v", err)
	}

	write("[[key]]\nalias = \"alias/a\"\nspec = 5\n")
	if r := hsmgate(t, nil, "--data", data, "apply", file); r.code != 1 || !strings.Contains(r.stderr, `keys.toml:3: key.spec: incompatible types`) {
		t.Errorf("apply of a file with a wrong type: exit %d", r.code)
	}
	write("[[key]\n")
	if r := hsmgate(t, nil, "--data", data, "apply", file); r.code != 1 || !regexp.MustCompile(`keys.toml:\d+: expected`).MatchString(r.stderr) {
		t.Errorf("apply of a file with a syntax error: exit %d", r.code)
	}
	write("[keys]\nalias = \"alias/a\"\n")
	if r := hsmgate(t, nil, "--data", data, "apply", file); r.code != 1 || !strings.Contains(r.stderr, `keys.toml:1: unknown key "keys"`) || strings.Contains(r.stderr, "keys.alias") {
		t.Errorf("apply of a file with an unknown table: exit %d", r.code)
	}
}

// The example file of docs/operations.md is valid.
func TestApplyDocumentedExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Keys as code\n")
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(section)
	if !ok || m == nil {
		t.Fatal("docs/operations.md has no TOML example under ## Keys as code")
	}
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", "apply"), dir)
	file := filepath.Join(dir, "example.toml")
	if err := os.WriteFile(file, []byte(m[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	decls, err := loadApplyFile(file)
	if err != nil {
		t.Fatalf("the documented example: %v", err)
	}
	if len(decls) != 4 || !decls[3].Delete || decls[2].Usage != "SIGN_VERIFY" || decls[1].Usage != "GENERATE_VERIFY_MAC" {
		t.Errorf("the documented example reads as %+v", decls)
	}
}

// wantLines checks the exit status and that the change lines (+, ~, -) of
// r's stdout are exactly want, in order.
func wantLines(t *testing.T, what string, r result, code int, want []string) {
	t.Helper()
	var got []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "+ ") || strings.HasPrefix(l, "~ ") || strings.HasPrefix(l, "- ") {
			got = append(got, l)
		}
	}
	if r.code != code || !slices.Equal(got, want) {
		t.Errorf("%s: exit %d, want %d; changes:\n%s\nwant:\n%s", what, r.code, code, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// edit replaces each old text of file (which must be there) by its new.
func edit(t *testing.T, file string, oldNew ...string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(oldNew); i += 2 {
		if strings.Count(s, oldNew[i]) != 1 {
			t.Fatalf("%s holds %q %d times, want once", file, oldNew[i], strings.Count(s, oldNew[i]))
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func describe(t *testing.T, c *kms.Client, alias string) *types.KeyMetadata {
	t.Helper()
	out, err := c.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	if err != nil {
		t.Fatalf("DescribeKey %s: %v", alias, err)
	}
	return out.KeyMetadata
}

func tagsOf(t *testing.T, c *kms.Client, id string) map[string]string {
	t.Helper()
	out, err := c.ListResourceTags(context.Background(), &kms.ListResourceTagsInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatalf("ListResourceTags %s: %v", id, err)
	}
	tags := map[string]string{}
	for _, tag := range out.Tags {
		tags[aws.ToString(tag.TagKey)] = aws.ToString(tag.TagValue)
	}
	return tags
}

func aliasesOf(t *testing.T, c *kms.Client, id string) []string {
	t.Helper()
	out, err := c.ListAliases(context.Background(), &kms.ListAliasesInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatalf("ListAliases %s: %v", id, err)
	}
	var names []string
	for _, a := range out.Aliases {
		names = append(names, aws.ToString(a.AliasName))
	}
	slices.Sort(names)
	return names
}

// rotationOf is a key's rotation period, 0 when it doesn't rotate.
func rotationOf(t *testing.T, c *kms.Client, id string) int32 {
	t.Helper()
	out, err := c.GetKeyRotationStatus(context.Background(), &kms.GetKeyRotationStatusInput{KeyId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetKeyRotationStatus %s: %v", id, err)
	}
	if !out.KeyRotationEnabled {
		return 0
	}
	return aws.ToInt32(out.RotationPeriodInDays)
}
