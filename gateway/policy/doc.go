// Package policy parses and evaluates AWS KMS key policies: the part of the
// IAM policy language a key policy may use, with AWS's evaluation rules, so
// that the gateway can decide every request against the policy of the key
// the request names.
//
// # Use
//
// A policy is parsed and validated once, when it is set (CreateKey,
// PutKeyPolicy), and the resulting [*Policy] is kept and evaluated on every
// request:
//
//	p, err := policy.Parse(doc)
//	if err != nil {
//		// err is a *policy.Error; its message is fit for the client as
//		// MalformedPolicyDocumentException.
//	}
//	...
//	switch p.Evaluate(&policy.Request{
//		Principals: []string{"arn:aws:iam::111122223333:user/alice"},
//		Account:    "111122223333",
//		Action:     "kms:Decrypt",
//		Resource:   keyARN,
//		Context:    policy.MapContext{"kms:encryptioncontext:app": {"billing"}},
//	}) {
//	case policy.Allow: // go on
//	default:           // Deny (explicit) or NotApplicable (implicit deny)
//	}
//
// Parse does all the JSON work, lower-cases condition keys, parses every
// number, date, IP range and ARN in the policy, and checks each pattern.
// Evaluate then only compares strings: it does no JSON work, compiles no
// regular expression and, with a [MapContext], allocates nothing. A parsed
// Policy is read-only and safe for concurrent use. Neither function panics,
// whatever its input.
//
// # The language
//
// A policy document is a JSON object of at most 32 KiB (AWS's limit for a key
// policy) made of the characters AWS allows in a key policy: printable ASCII,
// printable Latin-1, tab, line feed and carriage return. Its elements are
//
//	Version     "2012-10-17" or "2008-10-17"; optional, defaulting to 2008-10-17
//	Id          optional string
//	Statement   one statement object, or a non-empty array of them
//
// and each statement has
//
//	Sid                        optional string; two statements may not share one
//	Effect                     "Allow" or "Deny" (exact case), required
//	Principal | NotPrincipal   exactly one, required in a key policy
//	Action    | NotAction      exactly one
//	Resource  | NotResource    exactly one
//	Condition                  optional
//
// Element names are case-sensitive, an element may not appear twice in one
// object, and anything else (an unknown element, a JSON value of the wrong
// type, an empty list) is an error. Where a list is allowed a single string
// may stand for a list of one. AWS's KMS API accepts a statement without a
// Resource and ignores it; this package, like the AWS console, refuses it.
//
// Principal is "*" (anyone) or an object of principal types: "AWS" with an
// ARN, a 12-digit account id or "*", or a list of them. "Service",
// "Federated" and "CanonicalUser" principals are accepted but never match,
// since the gateway has no such callers. A wildcard anywhere but in a lone
// "*" is an error, as in AWS.
//
// Action values are "*" or "kms:<name>" (or "xks:<name>", the actions of
// the external key store proxy API that a key's XKS policy decides, or
// "hsmgate:<name>", the gateway's own actions such as hsmgate:ExportKey),
// where <name> may use the wildcards
// "*" (any run of characters) and "?" (one character); actions of other
// services are an error. Resource values are "*" or ARNs, with the same
// wildcards. NotPrincipal, NotAction and NotResource match whatever their
// list does not.
//
// # Principals and the account root
//
// The gateway has no IAM: there are no identity policies to which a key
// policy could delegate. So the account principal of the gateway's own
// account, "arn:aws:iam::<Account>:root" or the bare "<Account>", stands for
// the gateway's administrators: it matches a request with [Request.Admin]
// set and nobody else (not even a request that lists the root ARN among its
// principals). This is what makes the default key policy (see
// [DefaultKeyPolicy]) give the administrators full control of every key. The
// root of another account is an ordinary principal, matched by exact string
// comparison, as is any other ARN: a statement's principal matches when any
// one of [Request.Principals] equals any one of its ARNs. Principal ARNs are
// compared as strings, case-sensitively; the package does not interpret
// users, roles or services.
//
// # Evaluation
//
// A statement matches a request when its principal, action and resource
// elements match and every condition holds. If any Deny statement matches,
// the decision is [Deny]; otherwise, if any Allow statement matches, it is
// [Allow]; otherwise it is [NotApplicable], which a caller must treat as a
// denial (AWS's implicit deny).
//
// # Case rules
//
// Following AWS:
//
//   - Actions match case-insensitively ("KMS:encrypt" matches kms:Encrypt;
//     action names are ASCII, and only ASCII letters fold).
//   - Resources and principal ARNs match case-sensitively.
//   - Element names, Effect values and condition operator names are
//     case-sensitive.
//   - Condition key names are case-insensitive: Parse lower-cases each key
//     (with [strings.ToLower]) and Evaluate asks the [Context] for that
//     lower-cased name. This includes the part after the prefix in keys such
//     as kms:EncryptionContext:<context-key> and aws:PrincipalTag/<tag-key>.
//     AWS's KMS developer guide says so explicitly for the encryption
//     context: the condition key, prefix and context-key alike, is not case
//     sensitive, so "kms:EncryptionContext:AppName" also matches an
//     encryption context key "appname"; only the value's case is checked, by
//     case-sensitive operators such as StringEquals. The way to require the
//     exact case of an encryption context key is a kms:EncryptionContextKeys
//     condition with a case-sensitive operator, whose values are the keys.
//   - Condition values compare as their operator says: StringEquals,
//     StringLike and the ARN operators are case-sensitive,
//     StringEqualsIgnoreCase is not, Bool accepts "true" and "false" in any
//     case.
//
// # Conditions
//
// A Condition element maps operators to blocks of condition keys and values:
//
//	"Condition": {
//	    "StringEquals":              {"kms:EncryptionContext:app": ["billing", "payroll"]},
//	    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "tenant"]},
//	    "IpAddress":                 {"aws:SourceIp": "203.0.113.0/24"}
//	}
//
// The operators are StringEquals, StringNotEquals, StringEqualsIgnoreCase,
// StringNotEqualsIgnoreCase, StringLike, StringNotLike, NumericEquals,
// NumericNotEquals, NumericLessThan, NumericLessThanEquals,
// NumericGreaterThan, NumericGreaterThanEquals, DateEquals, DateNotEquals,
// DateLessThan, DateLessThanEquals, DateGreaterThan, DateGreaterThanEquals,
// Bool, IpAddress, NotIpAddress, ArnEquals, ArnLike, ArnNotEquals,
// ArnNotLike and Null. Each but Null takes an optional "IfExists" suffix and
// an optional "ForAllValues:" or "ForAnyValue:" prefix. Policy values may be
// JSON strings, numbers or booleans (a number keeps its literal text) or a
// list of them, and are checked when the policy is parsed: numbers are
// decimals, dates are W3C ISO 8601 (YYYY-MM, YYYY-MM-DD, or a date with a
// time of hh:mm, hh:mm:ss or hh:mm:ss.fraction and a zone Z or ±hh:mm; a
// missing zone means UTC) or epoch seconds (all digits), IP values are
// IPv4 or IPv6 addresses or CIDR ranges, ARN values are ARNs, Bool and Null
// values are true or false.
//
// The rules are AWS's:
//
//   - Operators in a Condition element, and keys within an operator, are
//     ANDed. The values listed for one key are ORed: the key's condition
//     holds when the request value matches any one of them.
//   - A negated operator (StringNotEquals, StringNotEqualsIgnoreCase,
//     StringNotLike, NumericNotEquals, DateNotEquals, NotIpAddress,
//     ArnNotEquals, ArnNotLike) holds when the request value matches none of
//     the listed values: it is exactly the negation of its positive twin.
//   - A key missing from the request makes a positive operator false and a
//     negated operator true. With the IfExists suffix a missing key makes
//     the condition true, whatever the operator. Null with true holds when
//     the key is missing, Null with false when it is present.
//   - A key the Context reports present but with no values is treated as
//     missing (AWS: a key that resolves to an empty set).
//   - A request key may have several values: kms:EncryptionContextKeys does,
//     as do kms:ResourceAliases and aws:TagKeys, while
//     kms:EncryptionContext:<key> and aws:PrincipalTag/<key> have one. With
//     no set qualifier, a positive operator holds when any request value
//     matches any policy value, and a negated operator when none does (the
//     negation of the positive result); this is how AWS treats a
//     multi-valued key used without a qualifier. AWS advises a qualifier for
//     multi-valued keys, and so does this package, but does not require one.
//   - ForAllValues: holds when every request value passes the operator's
//     test (for a negated operator, matches none of the policy values); it
//     holds when the key is missing or empty. ForAnyValue: holds when at
//     least one request value passes; it fails when the key is missing or
//     empty.
//   - StringLike, StringNotLike and the ARN operators understand "*" and
//     "?". The ARN operators (ArnEquals and ArnLike are the same operator, as
//     in AWS) compare the six colon-separated parts of an ARN separately, so
//     a "*" never crosses a colon; a request value that is not an ARN matches
//     nothing. Resource patterns, like StringLike, match the whole string: a
//     "*" may cross colons (AWS allows that for a "*" at the end of an ARN
//     segment; this package allows it everywhere, which only matters for
//     contrived patterns).
//   - Date operators compare instants. Request values (aws:CurrentTime,
//     aws:EpochTime) may be RFC 3339 strings or epoch seconds.
//   - IpAddress and NotIpAddress match a request IP (aws:SourceIp) against
//     the ranges; an address without a prefix length is a single address.
//     An IPv4-mapped IPv6 request address is compared as IPv4.
//   - A request value that cannot be read as the operator's type (a date
//     operator given "yesterday") matches no policy value: a positive
//     operator fails on it and a negated one holds.
//   - As AWS's KMS does, a "ForAllValues:" qualifier on
//     kms:EncryptionContext:<key> or aws:RequestTag/<key> is refused: those
//     keys are single-valued, and the qualifier would let requests without
//     the pair through.
//
// # What is not supported
//
// Policy variables are not substituted. With Version 2012-10-17, where AWS
// would substitute them, a "${" in a Resource, NotResource or condition
// value is a parse error rather than a silently different policy; with
// Version 2008-10-17 (or no Version), AWS itself compares "${...}"
// literally, and so does this package. BinaryEquals is not supported (an
// unknown operator). Condition keys are whatever the [Context] supplies: the
// package knows no key's meaning, and a key the gateway does not supply is
// simply missing.
package policy
