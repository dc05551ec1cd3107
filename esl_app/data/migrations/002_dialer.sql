-- esl-app outbound dialer (docs/dialer.md): campaigns, their contacts, every attempt, do-not-call.
-- The attempt row (with its origination UUID) is written BEFORE the call is originated: a dialer
-- that dies at any point leaves a row another instance can reconcile against the node.

CREATE TABLE campaigns (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tenant_id        text NOT NULL REFERENCES tenants (id),
    caller_id_number text NOT NULL CHECK (caller_id_number ~ '^\+?[0-9]{1,20}$'),
    caller_id_name   text NOT NULL DEFAULT '',
    gateway          text NOT NULL,          -- dial string prefix: 'sofia/gateway/carrier' -> sofia/gateway/carrier/<number>
    flow             text NOT NULL,          -- esl_app_flow: the outbound-pool route answered calls run
    cps              real NOT NULL DEFAULT 1 CHECK (cps > 0),
    max_concurrent   integer NOT NULL DEFAULT 10 CHECK (max_concurrent > 0),
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    retry_busy       interval NOT NULL DEFAULT '5 minutes',
    retry_no_answer  interval NOT NULL DEFAULT '30 minutes',
    retry_failed     interval NOT NULL DEFAULT '10 minutes',
    ring_timeout     integer NOT NULL DEFAULT 30 CHECK (ring_timeout BETWEEN 1 AND 600),
    status           text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'running', 'paused', 'done')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- calling window per weekday (0 = Monday) in the tenant's time zone, [opens, closes);
-- a campaign without any row may call around the clock
CREATE TABLE campaign_hours (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    weekday     smallint NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    opens       time NOT NULL,
    closes      time NOT NULL,
    CHECK (opens < closes),
    PRIMARY KEY (campaign_id, weekday, opens)
);

-- state: pending (due at next_attempt_at), dialing (claimed: an attempt may be in flight, lease_*),
-- done (answered), exhausted (max attempts, or a final cause), dnc (on a do-not-call list)
CREATE TABLE contacts (
    id              bigserial PRIMARY KEY,
    campaign_id     bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    number          text NOT NULL CHECK (number ~ '^\+?[1-9][0-9]{5,14}$'),
    variables       jsonb NOT NULL DEFAULT '{}',
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'dialing', 'done', 'exhausted', 'dnc')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_outcome    text,
    lease_owner     text,
    lease_until     timestamptz,
    UNIQUE (campaign_id, number)
);
CREATE INDEX contacts_due ON contacts (campaign_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX contacts_leased ON contacts (lease_until) WHERE state = 'dialing';

-- outcome NULL: in flight (or its dialer died: reconcile). 'not_originated': the call never existed
-- (no node took it); such a row does not count as an attempt.
CREATE TABLE attempts (
    id               bigserial PRIMARY KEY,
    campaign_id      bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id       bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    attempt_number   integer NOT NULL,
    origination_uuid uuid NOT NULL UNIQUE,
    dialer           text NOT NULL,          -- the instance that wrote it
    node             text,                   -- set before the originate is sent to that node
    node_core_uuid   text,                   -- the node's Core-UUID then: a restart since means the call is gone
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    originated_at    timestamptz,
    answered_at      timestamptz,
    ended_at         timestamptz,
    hangup_cause     text,
    outcome          text CHECK (outcome IN ('answered', 'busy', 'no_answer', 'failed', 'final', 'lost',
                                             'not_originated'))
);
CREATE INDEX attempts_contact ON attempts (contact_id);
CREATE INDEX attempts_live ON attempts (campaign_id) WHERE ended_at IS NULL;
CREATE INDEX attempts_created ON attempts (campaign_id, created_at);

-- do-not-call: tenant_id NULL = global (every tenant)
CREATE TABLE dnc (
    tenant_id text REFERENCES tenants (id) ON DELETE CASCADE,
    number    text NOT NULL,
    reason    text,
    added_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant_id, number)
);
CREATE INDEX dnc_number ON dnc (number);
