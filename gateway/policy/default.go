package policy

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The Sids of the default key policy's statements.
const (
	SidEnableIAM     = "Enable IAM User Permissions"
	SidCreatorAccess = "Allow the key creator to administer and use the key"
)

// DefaultKeyPolicy returns the key policy a key gets when its creator gives
// none, as pretty-printed JSON, in the shape of AWS's default key policy:
// Version 2012-10-17, Id "key-default-1", and a statement "Enable IAM User
// Permissions" that allows the account principal arn:aws:iam::<account>:root
// (here: the gateway's administrators) kms:* on the key. When creatorARN is
// not empty, a second statement, "Allow the key creator to administer and use
// the key", allows creatorARN kms:* as well, so that a key's creator keeps
// control of it without being an administrator (AWS gets the same effect
// from the creator's IAM permissions, which the gateway does not have).
//
// The result parses with Parse when account is a 12-digit account id and
// creatorARN is empty or an ARN.
func DefaultKeyPolicy(account, creatorARN string) string {
	type principal struct {
		AWS string `json:"AWS"`
	}
	type statement struct {
		Sid       string    `json:"Sid"`
		Effect    string    `json:"Effect"`
		Principal principal `json:"Principal"`
		Action    string    `json:"Action"`
		Resource  string    `json:"Resource"`
	}
	doc := struct {
		Version   string      `json:"Version"`
		ID        string      `json:"Id"`
		Statement []statement `json:"Statement"`
	}{
		Version: Version2012,
		ID:      "key-default-1",
		Statement: []statement{{
			Sid:       SidEnableIAM,
			Effect:    "Allow",
			Principal: principal{AWS: "arn:aws:iam::" + account + ":root"},
			Action:    "kms:*",
			Resource:  "*",
		}},
	}
	if creatorARN != "" {
		doc.Statement = append(doc.Statement, statement{
			Sid:       SidCreatorAccess,
			Effect:    "Allow",
			Principal: principal{AWS: creatorARN},
			Action:    "kms:*",
			Resource:  "*",
		})
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "    ")
	_ = enc.Encode(doc) // cannot fail: only strings
	return strings.TrimSuffix(b.String(), "\n")
}
