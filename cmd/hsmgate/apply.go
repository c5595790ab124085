package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/hsmgate/hsmgate/gateway/keystore"
	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/gateway/policy"
)

// `hsmgate apply FILE` is keys as code: FILE (TOML) declares keys, their
// aliases, description, tags, key policy, rotation and state, and apply
// makes the running gateway match it through the AWS KMS API, as the admin
// (mutual TLS with the data folder's admin client certificate, as the
// principal commands call a running gateway). docs/operations.md, "Keys as
// code", is the user's description; in short:
//
//   - a key is known by its alias (DescribeKey alias/…): absent, it is
//     created; present, it is compared and changed where it differs;
//   - what the file leaves out is left alone: keys it doesn't name, aliases
//     it doesn't list, and a key's description, tags and key policy when
//     the file doesn't set them;
//   - nothing is ever deleted unless the file says `delete = true`, and then
//     only by ScheduleKeyDeletion;
//   - the file is checked in full, then the whole plan is made (reads only),
//     and only a plan without errors is carried out, in order, stopping at
//     the first failure. --plan prints the plan and stops there.

// applyFile is the TOML file.
type applyFile struct {
	Keys []keyDecl `toml:"key"`
}

// keyDecl is one [[key]] of the file. Pointers and nil maps tell "not
// set" from a zero value.
type keyDecl struct {
	Alias             string            `toml:"alias"`
	Aliases           []string          `toml:"aliases"`
	Description       *string           `toml:"description"`
	Spec              string            `toml:"spec"`
	Usage             string            `toml:"usage"`
	Enabled           *bool             `toml:"enabled"`
	RotationDays      int               `toml:"rotation_days"`
	Tags              map[string]string `toml:"tags"`
	Policy            *string           `toml:"policy"`
	PolicyFile        string            `toml:"policy_file"`
	Delete            bool              `toml:"delete"`
	PendingWindowDays int               `toml:"pending_window_days"`

	// Filled in by the checks.
	line         int    // the line of its [[key]], 0 if unknown
	policyText   string // the key policy (from policy or policy_file); "" when not set
	policyWhere  string // "policy_file policies/x.json" or "policy", for messages
	specExplicit bool   // spec or usage was set in the file
}

// The limits AWS KMS (and the gateway) set, checked before any call.
const (
	applyMinRotationDays = 90
	applyMaxRotationDays = 2560
	applyMinWindowDays   = 7
	applyMaxWindowDays   = 30
	applyDefaultWindow   = 30
	applyMaxDescription  = 8192
	applyMaxPolicyBytes  = 32768
)

// applyUsages returns the usages a spec allows, the default first; an
// empty default means the file must choose (RSA keys encrypt or sign). The
// table is the gateway's own (a gateway on HSMs lacking a mechanism may
// still refuse a spec when the key is created).
func applyUsages(spec string) ([]string, bool) {
	usages, ok := kmsapi.KeyUsages(spec)
	if ok && strings.HasPrefix(spec, "RSA_") {
		usages = append([]string{""}, usages...)
	}
	return usages, ok
}

var applyAliasName = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]+$`)

func checkAliasName(name string) error {
	switch {
	case !applyAliasName.MatchString(name) || len(name) > 256:
		return fmt.Errorf("alias %q: want alias/ followed by 1 to 250 of a-z, A-Z, 0-9, /, _ and -", name)
	case strings.HasPrefix(name, "alias/aws/"), strings.HasPrefix(name, "alias/managed/"):
		return fmt.Errorf("alias %q: names beginning with alias/aws/ or alias/managed/ are reserved", name)
	}
	return nil
}

// applyKnownFields lists the fields of a [[key]], for the error of an
// unknown one.
const applyKnownFields = "alias, aliases, description, spec, usage, enabled, rotation_days, tags, policy, policy_file, delete, pending_window_days"

// loadApplyFile reads and checks the file in full: TOML syntax and types,
// unknown fields, and every rule that can be checked without the gateway.
// Its errors name the file and, where known, the line.
func loadApplyFile(path string) ([]*keyDecl, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	text := string(raw)
	var f applyFile
	md, err := toml.Decode(text, &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) && pe.Position.Line > 0 {
			return nil, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		// A type error: "toml: line 3 (last key "key.spec"): incompatible types: …".
		if m := tomlTypeError.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("%s:%s: %s: %s", path, m[1], m[2], m[3])
		}
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))
	}
	var errs []error
	var unknown []toml.Key
	for _, k := range md.Undecoded() {
		if slices.ContainsFunc(unknown, func(u toml.Key) bool { return len(u) < len(k) && slices.Equal(u, k[:len(u)]) }) {
			continue // inside an unknown table already reported
		}
		unknown = append(unknown, k)
		name := k[len(k)-1]
		where := path
		if line := keyLine(text, name); line > 0 {
			where = fmt.Sprintf("%s:%d", path, line)
		}
		if len(k) == 2 && k[0] == "key" {
			errs = append(errs, fmt.Errorf("%s: unknown field %q in a [[key]] (the fields are %s)", where, name, applyKnownFields))
		} else {
			errs = append(errs, fmt.Errorf("%s: unknown key %q (the file holds [[key]] tables only)", where, k.String()))
		}
	}
	// The line of each [[key]] header, when the file uses that form for
	// every key (an inline array of tables has none).
	headers := regexp.MustCompile(`(?m)^[ \t]*\[\[[ \t]*key[ \t]*\]\]`).FindAllStringIndex(text, -1)
	decls := make([]*keyDecl, len(f.Keys))
	for i := range f.Keys {
		d := &f.Keys[i]
		if len(headers) == len(f.Keys) {
			d.line = 1 + strings.Count(text[:headers[i][0]], "\n")
		}
		decls[i] = d
	}
	seen := map[string]*keyDecl{}
	for i, d := range decls {
		where := fmt.Sprintf("%s: key #%d", path, i+1)
		if d.line > 0 {
			where = fmt.Sprintf("%s:%d: key", path, d.line)
		}
		if d.Alias != "" {
			where += " " + d.Alias
		}
		for _, e := range d.check(filepath.Dir(path)) {
			errs = append(errs, fmt.Errorf("%s: %w", where, e))
		}
		for _, a := range d.allAliases() {
			if a == "" || checkAliasName(a) != nil {
				continue
			}
			if other, dup := seen[a]; dup {
				if other == d {
					errs = append(errs, fmt.Errorf("%s: alias %s is listed twice", where, a))
				} else {
					errs = append(errs, fmt.Errorf("%s: alias %s is also declared by key %s: an alias names one key", where, a, other.Alias))
				}
				continue
			}
			seen[a] = d
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return decls, nil
}

var tomlTypeError = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// keyLine is the first line that sets the TOML key name (name = …) or
// opens a table of that name ([name], [[name]]), or 0.
func keyLine(text, name string) int {
	q := regexp.QuoteMeta(name)
	re := regexp.MustCompile(`(?m)^[ \t]*(?:(?:` + q + `|"` + q + `"|'` + q + `')[ \t]*=|\[\[?[ \t]*` + q + `[ \t]*\])`)
	loc := re.FindStringIndex(text)
	if loc == nil {
		return 0
	}
	return 1 + strings.Count(text[:loc[0]], "\n")
}

func (d *keyDecl) allAliases() []string { return append([]string{d.Alias}, d.Aliases...) }

// wantEnabled is the state the file asks for (enabled by default).
func (d *keyDecl) wantEnabled() bool { return d.Enabled == nil || *d.Enabled }

// window is the pending window of a deletion.
func (d *keyDecl) window() int {
	if d.PendingWindowDays == 0 {
		return applyDefaultWindow
	}
	return d.PendingWindowDays
}

// check checks one key and fills in its defaults and its policy text.
func (d *keyDecl) check(dir string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if d.Alias == "" {
		bad("alias is required: a key is known by its alias")
	}
	for _, a := range d.allAliases() {
		if a == "" && d.Alias == "" {
			continue
		}
		if err := checkAliasName(a); err != nil {
			bad("%v", err)
		}
	}
	d.specExplicit = d.Spec != "" || d.Usage != ""
	if d.Spec == "" {
		d.Spec = "SYMMETRIC_DEFAULT"
	}
	usages, ok := applyUsages(d.Spec)
	switch {
	case !ok:
		known := kmsapi.KeySpecs()
		bad("spec %q is not a key spec hsmgate offers (%s)", d.Spec, strings.Join(known, ", "))
	case d.Usage == "" && usages[0] == "":
		bad("usage is required for a %s key: ENCRYPT_DECRYPT or SIGN_VERIFY", d.Spec)
	case d.Usage == "":
		d.Usage = usages[0]
	case !slices.Contains(usages, d.Usage):
		bad("usage %q is not valid for spec %s (valid: %s)", d.Usage, d.Spec, strings.Join(slices.DeleteFunc(slices.Clone(usages), func(s string) bool { return s == "" }), ", "))
	}
	switch {
	case d.RotationDays < 0:
		bad("rotation_days is %d: want 0 (no automatic rotation) or %d to %d", d.RotationDays, applyMinRotationDays, applyMaxRotationDays)
	case d.RotationDays > 0 && ok && d.Spec != "SYMMETRIC_DEFAULT":
		bad("rotation_days: only symmetric encryption keys (SYMMETRIC_DEFAULT) rotate automatically, not %s keys", d.Spec)
	case d.RotationDays > 0 && (d.RotationDays < applyMinRotationDays || d.RotationDays > applyMaxRotationDays):
		bad("rotation_days is %d: want %d to %d (or 0 for no automatic rotation)", d.RotationDays, applyMinRotationDays, applyMaxRotationDays)
	}
	if d.PendingWindowDays != 0 && (d.PendingWindowDays < applyMinWindowDays || d.PendingWindowDays > applyMaxWindowDays) {
		bad("pending_window_days is %d: want %d to %d (default %d)", d.PendingWindowDays, applyMinWindowDays, applyMaxWindowDays, applyDefaultWindow)
	}
	if d.Description != nil && utf8.RuneCountInString(*d.Description) > applyMaxDescription {
		bad("description is longer than %d characters", applyMaxDescription)
	}
	if len(d.Tags) > keystore.MaxTags {
		bad("%d tags: a key can have at most %d", len(d.Tags), keystore.MaxTags)
	}
	for _, k := range slices.Sorted(maps.Keys(d.Tags)) {
		switch v := d.Tags[k]; {
		case k == "" || utf8.RuneCountInString(k) > 128:
			bad("tag key %q: want 1 to 128 characters", k)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			bad("tag key %q: keys beginning with aws: are reserved", k)
		case utf8.RuneCountInString(v) > 256:
			bad("tag %s: the value is longer than 256 characters", k)
		}
	}
	switch {
	case d.Policy != nil && d.PolicyFile != "":
		bad("set policy or policy_file, not both")
	case d.Policy != nil:
		d.policyText, d.policyWhere = *d.Policy, "policy"
	case d.PolicyFile != "":
		p := d.PolicyFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			bad("policy_file: %v", err)
			break
		}
		d.policyText, d.policyWhere = string(b), "policy_file "+d.PolicyFile
	}
	if d.policyWhere != "" {
		switch doc := []byte(d.policyText); {
		case strings.TrimSpace(d.policyText) == "":
			bad("%s is empty: leave it out to keep the key's policy as it is", d.policyWhere)
		case len(doc) > applyMaxPolicyBytes:
			bad("%s is %d bytes; a key policy can be at most %d", d.policyWhere, len(doc), applyMaxPolicyBytes)
		case !json.Valid(doc):
			var v any
			err := json.Unmarshal(doc, &v)
			bad("%s is not valid JSON: %v", d.policyWhere, err)
		default:
			if _, err := policy.Parse(doc); err != nil {
				bad("%s: %v", d.policyWhere, err)
			}
		}
	}
	return errs
}

// An applyAction is one change: a line saying what it does, and the calls
// that do it. The line is printed by --plan, and again once done.
type applyAction struct {
	line string
	do   func(ctx context.Context) (note string, err error)
}

// keyRef is the id of a declared key: known at planning for an existing
// key, set by its CreateKey for a new one.
type keyRef struct{ id string }

// applyPlan is what apply would do.
type applyPlan struct {
	actions   []applyAction // in order
	deletions []applyAction // after every other action
	errs      []error       // what no action can fix
	warnings  []string
}

// planner computes the plan with the gateway's KMS API (reads only).
type planner struct {
	ctx    context.Context
	kms    *kms.Client
	plan   applyPlan
	owners map[string]string // key id -> the declared alias that names it
}

// applyAPIError is a KMS API error as the user sees it: the AWS error code
// and its message.
func applyAPIError(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}

// readError is a failed read while planning: the operation and alias,
// and the API's error.
type readError struct {
	what string // "DescribeKey alias/x"
	err  error
}

func (e *readError) Error() string { return e.what + ": " + applyAPIError(e.err) }
func (e *readError) Unwrap() error { return e.err }

func isNotFound(err error) bool {
	var nf *types.NotFoundException
	return errors.As(err, &nf)
}

// describe returns the key an alias names, or nil when there is none.
func (p *planner) describe(alias string) (*types.KeyMetadata, error) {
	out, err := p.kms.DescribeKey(p.ctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, &readError{"DescribeKey " + alias, err}
	}
	return out.KeyMetadata, nil
}

func (p *planner) add(line string, do func(ctx context.Context) (string, error)) {
	p.plan.actions = append(p.plan.actions, applyAction{line: line, do: do})
}

func (p *planner) fail(d *keyDecl, format string, a ...any) {
	p.plan.errs = append(p.plan.errs, fmt.Errorf("key %s: %s", d.Alias, fmt.Sprintf(format, a...)))
}

// keyType is AWS's grouping for UpdateAlias: an alias can only move
// between keys of the same type and usage.
func keyType(spec string) string {
	switch {
	case spec == "SYMMETRIC_DEFAULT":
		return "symmetric"
	case strings.HasPrefix(spec, "HMAC_"):
		return "HMAC"
	}
	return "asymmetric"
}

// planKey adds the actions that make one declared key match the file.
func (p *planner) planKey(d *keyDecl) error {
	meta, err := p.describe(d.Alias)
	if err != nil {
		return err
	}
	if meta != nil {
		id := aws.ToString(meta.KeyId)
		if other, dup := p.owners[id]; dup {
			p.fail(d, "%s and %s name the same key %s: declare it once, with the other alias in aliases", other, d.Alias, id)
			return nil
		}
		p.owners[id] = d.Alias
	}
	if d.Delete {
		p.planDelete(d, meta)
		return nil
	}
	ref := &keyRef{}
	var (
		enabled      bool // the key's state when the settings below are changed
		rotationDays int  // its rotation period, 0 for off, -1 unknown
	)
	if meta == nil {
		p.planCreate(d, ref)
		enabled, rotationDays = true, 0
	} else {
		ref.id = aws.ToString(meta.KeyId)
		if string(meta.KeySpec) != d.Spec || string(meta.KeyUsage) != d.Usage {
			p.fail(d, "%s names key %s, a %s %s key, but the file declares %s %s: a key's spec and usage can't change. "+
				"To replace the key, give the new one another alias (and schedule the old one's deletion with delete = true)",
				d.Alias, ref.id, meta.KeySpec, meta.KeyUsage, d.Spec, d.Usage)
			return nil
		}
		if meta.KeyManager == types.KeyManagerTypeAws {
			p.fail(d, "%s names a service-managed key, which apply can't manage", d.Alias)
			return nil
		}
		if d.RotationDays > 0 && meta.Origin != types.OriginTypeAwsKms {
			p.fail(d, "%s names key %s, whose key material is imported (origin %s): it can't rotate automatically", d.Alias, ref.id, meta.Origin)
			return nil
		}
		switch meta.KeyState {
		case types.KeyStateEnabled, types.KeyStateDisabled:
			enabled = meta.KeyState == types.KeyStateEnabled
			rotationDays = 0
			if d.Spec == "SYMMETRIC_DEFAULT" {
				rot, err := p.kms.GetKeyRotationStatus(p.ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(ref.id)})
				if err != nil {
					return &readError{"GetKeyRotationStatus " + d.Alias, err}
				}
				if rot.KeyRotationEnabled {
					rotationDays = int(aws.ToInt32(rot.RotationPeriodInDays))
				}
			}
		case types.KeyStatePendingDeletion:
			when := ""
			if meta.DeletionDate != nil {
				when = " on " + meta.DeletionDate.UTC().Format(time.DateOnly)
			}
			p.add(fmt.Sprintf("~ cancel deletion of %s (it was to be deleted%s); the key is disabled until enabled", d.Alias, when), func(ctx context.Context) (string, error) {
				_, err := p.kms.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(ref.id)})
				return "", err
			})
			enabled, rotationDays = false, -1 // its rotation can't be read while pending deletion
		default:
			p.fail(d, "%s names key %s, which is %s: apply manages enabled, disabled and pending-deletion keys only", d.Alias, ref.id, meta.KeyState)
			return nil
		}
		if d.wantEnabled() && !enabled {
			p.add("~ enable key "+d.Alias, func(ctx context.Context) (string, error) {
				_, err := p.kms.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(ref.id)})
				return "", err
			})
			enabled = true
		}
		if err := p.planSettings(d, ref, meta); err != nil {
			return err
		}
	}
	if err := p.planAliases(d, ref, meta == nil); err != nil {
		return err
	}
	p.planRotation(d, ref, enabled, rotationDays)
	if !d.wantEnabled() && enabled {
		p.add("~ disable key "+d.Alias, func(ctx context.Context) (string, error) {
			_, err := p.kms.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(ref.id)})
			return "", err
		})
	}
	return nil
}

// planCreate adds the creation of a key and of its alias.
func (p *planner) planCreate(d *keyDecl, ref *keyRef) {
	in := &kms.CreateKeyInput{KeySpec: types.KeySpec(d.Spec), KeyUsage: types.KeyUsageType(d.Usage), Description: d.Description}
	var extra []string
	if len(d.Tags) > 0 {
		var tags []string
		for _, k := range slices.Sorted(maps.Keys(d.Tags)) {
			in.Tags = append(in.Tags, types.Tag{TagKey: aws.String(k), TagValue: aws.String(d.Tags[k])})
			tags = append(tags, k+"="+d.Tags[k])
		}
		extra = append(extra, "tags "+strings.Join(tags, ","))
	}
	if d.policyWhere != "" {
		in.Policy = aws.String(d.policyText)
		extra = append(extra, "key policy from "+d.policyWhere)
	}
	line := fmt.Sprintf("+ create key %s (%s)", d.Alias, strings.Join(append([]string{d.Spec + ", " + d.Usage}, extra...), "; "))
	p.add(line, func(ctx context.Context) (string, error) {
		out, err := p.kms.CreateKey(ctx, in)
		if err != nil {
			return "", err
		}
		ref.id = aws.ToString(out.KeyMetadata.KeyId)
		if _, err := p.kms.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(d.Alias), TargetKeyId: aws.String(ref.id)}); err != nil {
			return "", fmt.Errorf("created key %s, but could not name it %s (name it with aws kms create-alias, or the next apply creates another key): %s", ref.id, d.Alias, applyAPIError(err))
		}
		return "key " + ref.id, nil
	})
}

// planSettings adds the changes of an existing key's description, key
// policy and tags, each compared only when the file sets it.
func (p *planner) planSettings(d *keyDecl, ref *keyRef, meta *types.KeyMetadata) error {
	if d.Description != nil && aws.ToString(meta.Description) != *d.Description {
		want := *d.Description
		p.add(fmt.Sprintf("~ description %s: %q -> %q", d.Alias, aws.ToString(meta.Description), want), func(ctx context.Context) (string, error) {
			_, err := p.kms.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(ref.id), Description: aws.String(want)})
			return "", err
		})
	}
	if d.policyWhere != "" {
		out, err := p.kms.GetKeyPolicy(p.ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(ref.id), PolicyName: aws.String("default")})
		if err != nil {
			return &readError{"GetKeyPolicy " + d.Alias, err}
		}
		if !sameJSON(aws.ToString(out.Policy), d.policyText) {
			p.add(fmt.Sprintf("~ key policy %s: set from %s", d.Alias, d.policyWhere), func(ctx context.Context) (string, error) {
				_, err := p.kms.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(ref.id), PolicyName: aws.String("default"), Policy: aws.String(d.policyText)})
				return "", err
			})
		}
	}
	if d.Tags != nil {
		have := map[string]string{}
		pages := kms.NewListResourceTagsPaginator(p.kms, &kms.ListResourceTagsInput{KeyId: aws.String(ref.id)})
		for pages.HasMorePages() {
			out, err := pages.NextPage(p.ctx)
			if err != nil {
				return &readError{"ListResourceTags " + d.Alias, err}
			}
			for _, t := range out.Tags {
				have[aws.ToString(t.TagKey)] = aws.ToString(t.TagValue)
			}
		}
		var set []types.Tag
		var remove, words []string
		for _, k := range slices.Sorted(maps.Keys(d.Tags)) {
			v, had := have[k]
			switch {
			case !had:
				words = append(words, "+"+k+"="+d.Tags[k])
			case v != d.Tags[k]:
				words = append(words, fmt.Sprintf("~%s=%s (was %s)", k, d.Tags[k], v))
			default:
				continue
			}
			set = append(set, types.Tag{TagKey: aws.String(k), TagValue: aws.String(d.Tags[k])})
		}
		for _, k := range slices.Sorted(maps.Keys(have)) {
			if _, keep := d.Tags[k]; !keep {
				remove = append(remove, k)
				words = append(words, "-"+k)
			}
		}
		if len(words) > 0 {
			p.add(fmt.Sprintf("~ tags %s: %s", d.Alias, strings.Join(words, " ")), func(ctx context.Context) (string, error) {
				if len(set) > 0 {
					if _, err := p.kms.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(ref.id), Tags: set}); err != nil {
						return "", err
					}
				}
				if len(remove) > 0 {
					if _, err := p.kms.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(ref.id), TagKeys: remove}); err != nil {
						return "", err
					}
				}
				return "", nil
			})
		}
	}
	return nil
}

// sameJSON compares two JSON documents by value: key order, spacing and
// number spelling don't matter.
func sameJSON(a, b string) bool {
	var va, vb any
	da, db := json.NewDecoder(strings.NewReader(a)), json.NewDecoder(strings.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return a == b
	}
	return reflect.DeepEqual(normalizeNumbers(va), normalizeNumbers(vb))
}

// normalizeNumbers turns json.Numbers into their canonical float64
// spelling, so that 1 and 1.0 compare equal.
func normalizeNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v.String()
	case map[string]any:
		for k, x := range v {
			v[k] = normalizeNumbers(x)
		}
	case []any:
		for i, x := range v {
			v[i] = normalizeNumbers(x)
		}
	}
	return v
}

// planAliases adds the creation of the key's other aliases, or their move
// from the key they name now.
func (p *planner) planAliases(d *keyDecl, ref *keyRef, creating bool) error {
	for _, a := range d.Aliases {
		meta, err := p.describe(a)
		if err != nil {
			return err
		}
		alias := a
		switch {
		case meta == nil:
			p.add(fmt.Sprintf("+ alias %s -> %s", alias, d.Alias), func(ctx context.Context) (string, error) {
				_, err := p.kms.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(ref.id)})
				return "", err
			})
		case !creating && aws.ToString(meta.KeyId) == ref.id:
			// Already there.
		case keyType(string(meta.KeySpec)) != keyType(d.Spec) || string(meta.KeyUsage) != d.Usage:
			p.fail(d, "alias %s names key %s, a %s %s key: it can only move to a key of the same type and usage, not %s %s",
				alias, aws.ToString(meta.KeyId), meta.KeySpec, meta.KeyUsage, d.Spec, d.Usage)
		default:
			p.add(fmt.Sprintf("~ alias %s: move from key %s to %s", alias, aws.ToString(meta.KeyId), d.Alias), func(ctx context.Context) (string, error) {
				_, err := p.kms.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(ref.id)})
				return "", err
			})
		}
	}
	return nil
}

// planRotation adds the change of a symmetric key's automatic rotation.
// have is its period now (0 off, -1 unknown); enabled is whether the key
// will be enabled when the change is made: the KMS API changes rotation
// only on enabled keys.
func (p *planner) planRotation(d *keyDecl, ref *keyRef, enabled bool, have int) {
	if d.Spec != "SYMMETRIC_DEFAULT" || have == d.RotationDays {
		return
	}
	if !enabled {
		if have < 0 {
			p.plan.warnings = append(p.plan.warnings, fmt.Sprintf("key %s: its rotation can't be read while it is pending deletion, nor changed while it is disabled: "+
				"apply again after this run to compare it", d.Alias))
			return
		}
		p.fail(d, "its automatic rotation (%s) differs from the file's (%s), but the KMS API changes rotation only on enabled keys: "+
			"apply with enabled = true, then disable it", rotationWords(have), rotationWords(d.RotationDays))
		return
	}
	want := d.RotationDays
	line := fmt.Sprintf("~ rotation %s: %s -> %s", d.Alias, rotationWords(have), rotationWords(want))
	if have < 0 {
		line = fmt.Sprintf("~ rotation %s: %s (its rotation can't be read while pending deletion)", d.Alias, rotationWords(want))
	}
	if want == 0 {
		p.add(line, func(ctx context.Context) (string, error) {
			_, err := p.kms.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: aws.String(ref.id)})
			return "", err
		})
		return
	}
	p.add(line, func(ctx context.Context) (string, error) {
		_, err := p.kms.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(ref.id), RotationPeriodInDays: aws.Int32(int32(want))})
		return "", err
	})
}

func rotationWords(days int) string {
	if days <= 0 {
		return "off"
	}
	return fmt.Sprintf("every %d days", days)
}

// planDelete adds the scheduled deletion of a key the file marks delete =
// true: none when there is no such key or it is already pending deletion.
func (p *planner) planDelete(d *keyDecl, meta *types.KeyMetadata) {
	if meta == nil || meta.KeyState == types.KeyStatePendingDeletion {
		return
	}
	id := aws.ToString(meta.KeyId)
	if d.specExplicit && (string(meta.KeySpec) != d.Spec || string(meta.KeyUsage) != d.Usage) {
		p.fail(d, "%s names key %s, a %s %s key, not the %s %s key the file declares: not deleting it", d.Alias, id, meta.KeySpec, meta.KeyUsage, d.Spec, d.Usage)
		return
	}
	if meta.KeyManager == types.KeyManagerTypeAws {
		p.fail(d, "%s names a service-managed key, which can't be deleted", d.Alias)
		return
	}
	days := d.window()
	p.plan.deletions = append(p.plan.deletions, applyAction{
		line: fmt.Sprintf("- schedule deletion of %s (key %s) in %d days", d.Alias, id, days),
		do: func(ctx context.Context) (string, error) {
			out, err := p.kms.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(id), PendingWindowInDays: aws.Int32(int32(days))})
			if err != nil {
				return "", err
			}
			return "on " + aws.ToTime(out.DeletionDate).UTC().Format(time.RFC3339), nil
		},
	})
}

// runApply makes the running gateway's keys match the file, or, with
// planOnly, prints what that would change.
func runApply(pc *principalCmd, file string, planOnly bool) error {
	decls, err := loadApplyFile(file)
	if err != nil {
		return fmt.Errorf("%s: %s is not a valid keys file; nothing was changed:%s", pc.name, file, indentLines(err))
	}
	cfg, err := loadConfig(pc.dataDir, pc.name)
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	endpoint, httpClient, err := pc.adminHTTPClient(opts, "apply calls the running gateway as the admin: run it where the admin's credentials are")
	if err != nil {
		return err
	}
	defer httpClient.CloseIdleConnections()
	client := kms.New(kms.Options{
		Region:       opts.Region,
		BaseEndpoint: aws.String(endpoint),
		HTTPClient:   httpClient,
		// Mutual TLS authenticates the admin: no SigV4 signature.
		Credentials: aws.AnonymousCredentials{},
		// A retried CreateKey could make two keys.
		Retryer: aws.NopRetryer{},
	})
	p := &planner{ctx: pc.ctx, kms: client, owners: map[string]string{}}
	for _, d := range decls {
		if err := p.planKey(d); err != nil {
			var se *smithyhttp.RequestSendError
			if errors.As(err, &se) {
				return fmt.Errorf("%s: the gateway at %s could not be reached: %w. Is it running (hsmgate serve)? If it listens elsewhere than gateway.listen, pass its address with --listen",
					pc.name, endpoint, se.Err)
			}
			return fmt.Errorf("%s: %w; nothing was changed", pc.name, err)
		}
	}
	actions := append(p.plan.actions, p.plan.deletions...)
	for _, w := range p.plan.warnings {
		fmt.Fprintf(pc.stderr, "%s: warning: %s\n", pc.name, w)
	}
	if len(p.plan.errs) > 0 {
		if planOnly {
			printLines(pc.stdout, actions)
			fmt.Fprintf(pc.stdout, "Plan: %s, but not before the errors below are fixed.\n", changes(len(actions)))
		}
		return fmt.Errorf("%s: the gateway's keys can't be made to match %s; nothing was changed:%s", pc.name, file, indentLines(errors.Join(p.plan.errs...)))
	}
	if len(actions) == 0 {
		fmt.Fprintln(pc.stdout, "No changes.")
		return nil
	}
	if planOnly {
		printLines(pc.stdout, actions)
		fmt.Fprintf(pc.stdout, "Plan: %s. Run without --plan to make %s.\n", changes(len(actions)), them(len(actions)))
		return nil
	}
	for i, a := range actions {
		note, err := a.do(pc.ctx)
		if err != nil {
			fmt.Fprintf(pc.stdout, "Made %s of %d, then stopped at a failure.\n", changes(i), len(actions))
			return fmt.Errorf("%s: failed: %s: %s\n%d planned %s not made: apply again to carry on from where the gateway is now",
				pc.name, a.line, applyAPIError(err), len(actions)-i, changeWord(len(actions)-i))
		}
		if note != "" {
			fmt.Fprintf(pc.stdout, "%s: %s\n", a.line, note)
		} else {
			fmt.Fprintln(pc.stdout, a.line)
		}
	}
	fmt.Fprintf(pc.stdout, "Applied %s.\n", changes(len(actions)))
	return nil
}

func printLines(w io.Writer, actions []applyAction) {
	var b bytes.Buffer
	for _, a := range actions {
		b.WriteString(a.line + "\n")
	}
	w.Write(b.Bytes())
}

// indentLines puts each line of err's message on its own indented line.
func indentLines(err error) string {
	return "\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")
}

func changeWord(n int) string {
	if n == 1 {
		return "change"
	}
	return "changes"
}

func changes(n int) string { return fmt.Sprintf("%d %s", n, changeWord(n)) }

func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}
