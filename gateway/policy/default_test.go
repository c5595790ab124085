package policy

import (
	"encoding/json"
	"testing"
)

func TestDefaultKeyPolicy(t *testing.T) {
	text := DefaultKeyPolicy(testAccount, alice)
	p := mustParse(t, text)
	if p.Version != Version2012 || p.ID != "key-default-1" || len(p.Statements) != 2 ||
		p.Statements[0].Sid != SidEnableIAM || p.Statements[1].Sid != SidCreatorAccess {
		t.Fatalf("parsed %+v from\n%s", p, text)
	}
	actions := []string{"kms:Encrypt", "kms:Decrypt", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:CreateGrant", "kms:GetKeyPolicy"}
	for _, a := range actions {
		if got := p.Evaluate(req(as(bob), admin, action(a))); got != Allow {
			t.Errorf("administrator, %s: %v", a, got)
		}
		if got := p.Evaluate(req(as(bob), action(a))); got != NotApplicable {
			t.Errorf("other principal, %s: %v", a, got)
		}
		if got := p.Evaluate(req(as(alice), action(a))); got != Allow {
			t.Errorf("creator, %s: %v", a, got)
		}
		if got := p.Evaluate(req(as(appRole), action(a))); got != NotApplicable {
			t.Errorf("other principal, %s: %v", a, got)
		}
	}
	// The lockout check: an administrator may still change the policy.
	if got := p.Evaluate(&Request{Admin: true, Account: testAccount, Action: "kms:PutKeyPolicy", Resource: keyARN, Context: MapContext{}}); got != Allow {
		t.Errorf("lockout check: %v", got)
	}

	var shape struct {
		Version   string
		Id        string
		Statement []struct {
			Sid, Effect, Action, Resource string
			Principal                     struct{ AWS string }
		}
	}
	if err := json.Unmarshal([]byte(text), &shape); err != nil {
		t.Fatal(err)
	}
	if s := shape.Statement[0]; s.Principal.AWS != rootARN || s.Action != "kms:*" || s.Resource != "*" || s.Effect != "Allow" {
		t.Errorf("first statement %+v", s)
	}
	if s := shape.Statement[1]; s.Principal.AWS != alice || s.Action != "kms:*" || s.Resource != "*" || s.Effect != "Allow" {
		t.Errorf("second statement %+v", s)
	}
}

func TestDefaultKeyPolicyWithoutCreator(t *testing.T) {
	want := `{
    "Version": "2012-10-17",
    "Id": "key-default-1",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {
                "AWS": "arn:aws:iam::111122223333:root"
            },
            "Action": "kms:*",
            "Resource": "*"
        }
    ]
}`
	text := DefaultKeyPolicy(testAccount, "")
	if text != want {
		t.Errorf("got\n%s\nwant\n%s", text, want)
	}
	p := mustParse(t, text)
	if len(p.Statements) != 1 {
		t.Fatalf("%d statements", len(p.Statements))
	}
	if got := p.Evaluate(req(admin, action("kms:PutKeyPolicy"))); got != Allow {
		t.Errorf("administrator: %v", got)
	}
	if got := p.Evaluate(req(action("kms:Encrypt"))); got != NotApplicable {
		t.Errorf("non-administrator: %v", got)
	}
}
