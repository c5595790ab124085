package policy

// MaxSize is the largest policy document Parse accepts, in bytes: AWS's limit
// for a key policy (32 KiB).
const MaxSize = 32 * 1024

// The policy language versions. A document without a Version element is
// Version2008.
const (
	Version2012 = "2012-10-17"
	Version2008 = "2008-10-17"
)

// Error is a policy document that Parse refused. Msg says what is wrong and
// where (a path such as "Statement[2].Condition", statement indices counting
// from 0), quoting at most a short excerpt of the document, so it can be sent
// to the client as a MalformedPolicyDocumentException message.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Policy is a parsed, validated key policy, ready to evaluate. It is
// read-only after Parse and safe for concurrent use.
type Policy struct {
	// Version is the document's Version, or Version2008 if it had none.
	Version string
	// ID is the document's optional Id element.
	ID string
	// Statements are the document's statements, in order.
	Statements []Statement
}

// Statement is one parsed statement of a policy.
type Statement struct {
	Sid    string // "" when the statement has none
	Effect string // "Allow" or "Deny"

	deny bool

	principal    principalSet
	notPrincipal bool

	actions   []pattern // matched case-insensitively
	notAction bool

	resources   []pattern // matched case-sensitively
	notResource bool

	conditions []condition // all must hold
}

// Request is what one evaluation asks: may these principals perform Action on
// Resource, given Context?
type Request struct {
	// Principals are the ARNs the caller is known by, such as
	// "arn:aws:iam::111122223333:user/alice". A statement's principal matches
	// when any one of them does.
	Principals []string
	// Admin is set when the caller is an administrator of the gateway's
	// account: such a caller is matched by the account principal
	// "arn:aws:iam::<Account>:root" (or "<Account>").
	Admin bool
	// Account is the gateway's 12-digit account id.
	Account string
	// Action is the operation, such as "kms:Encrypt".
	Action string
	// Resource is the key's ARN, such as
	// "arn:aws:kms:us-east-1:111122223333:key/<uuid>".
	Resource string
	// Context supplies condition key values; nil means no keys at all.
	Context Context
}

// Context supplies the values of condition keys for one request.
//
// Condition key names are case-insensitive, as in AWS: Parse lower-cases each
// key named in the policy (with strings.ToLower), and Evaluate calls Values
// with that lower-cased name, so an implementation must index its keys
// lower-cased too. That includes the whole of a key with a variable part:
// AWS's KMS developer guide states that the condition key
// kms:EncryptionContext:<context-key> is not case sensitive in either its
// prefix or its context-key, so an encryption context {"AppName": "x"} is
// offered as "kms:encryptioncontext:appname" -> ["x"] (values keep their
// case). Should a request's encryption context hold two keys that differ only
// in case, both values belong under the one lower-cased name. The context
// keys themselves, with their case, are the values of
// "kms:encryptioncontextkeys", which is how a policy can require a key's
// exact case.
//
// Values returns the key's values and whether the key is present; a key
// present with no values is treated as missing. Evaluate does not retain or
// modify the returned slice. Values must not panic.
type Context interface {
	Values(key string) (vals []string, present bool)
}

// MapContext is a Context held in a map from lower-cased key names to values.
type MapContext map[string][]string

// Values implements Context.
func (m MapContext) Values(key string) ([]string, bool) {
	v, ok := m[key]
	return v, ok
}

// Decision is the outcome of evaluating a policy.
type Decision int

const (
	// NotApplicable: no statement matched. The request is not allowed
	// (AWS's implicit deny), but nothing forbids it explicitly either.
	NotApplicable Decision = iota
	// Allow: an Allow statement matched and no Deny statement did.
	Allow
	// Deny: a Deny statement matched (an explicit deny, which no Allow can
	// override).
	Deny
)

func (d Decision) String() string {
	switch d {
	case NotApplicable:
		return "NotApplicable"
	case Allow:
		return "Allow"
	case Deny:
		return "Deny"
	}
	return "Decision(invalid)"
}

// Evaluate decides r against the policy: Deny if any Deny statement matches,
// else Allow if any Allow statement matches, else NotApplicable. A nil policy
// or request gives NotApplicable.
//
// The lockout safety check of PutKeyPolicy needs nothing more: parse the new
// policy and evaluate "kms:PutKeyPolicy" against it for the principals that
// must keep control (the caller, the administrators), typically with an
// empty Context; refuse the policy unless the answer is Allow.
func (p *Policy) Evaluate(r *Request) Decision {
	if p == nil || r == nil {
		return NotApplicable
	}
	allowed := false
	for i := range p.Statements {
		s := &p.Statements[i]
		if s.deny || !allowed { // once allowed, only a Deny can change the outcome
			if s.matches(r) {
				if s.deny {
					return Deny
				}
				allowed = true
			}
		}
	}
	if allowed {
		return Allow
	}
	return NotApplicable
}

// matches reports whether the statement applies to r: principal, action and
// resource match and every condition holds. The cheap string checks come
// first.
func (s *Statement) matches(r *Request) bool {
	if matchAny(s.actions, r.Action, true) == s.notAction {
		return false
	}
	if matchAny(s.resources, r.Resource, false) == s.notResource {
		return false
	}
	if s.principal.matches(r) == s.notPrincipal {
		return false
	}
	for i := range s.conditions {
		if !s.conditions[i].holds(r.Context) {
			return false
		}
	}
	return true
}

// principalSet is a compiled Principal or NotPrincipal element.
type principalSet struct {
	anyone bool            // "*" or {"AWS": "*"}
	roots  []rootPrincipal // account principals
	arns   []string        // other AWS principal ARNs, compared exactly
	// Service, Federated and CanonicalUser principals are accepted by Parse
	// but never match: the gateway has no such callers.
}

// rootPrincipal is an account principal, "arn:aws:iam::<account>:root" or
// "<account>".
type rootPrincipal struct {
	account string // 12 digits
	arn     string // the root ARN, as written or as normalized from a bare id
}

func (ps *principalSet) matches(r *Request) bool {
	if ps.anyone {
		return true
	}
	for i := range ps.roots {
		rp := &ps.roots[i]
		if rp.account == r.Account {
			// The gateway's own account root stands for its administrators,
			// and only for them.
			if r.Admin {
				return true
			}
			continue
		}
		if contains(r.Principals, rp.arn) {
			return true
		}
	}
	for _, a := range ps.arns {
		if contains(r.Principals, a) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
