-- esl-app progressive dialing into a queue (docs/dialer.md, "Progressive dialing"): a campaign paced
-- by the idle agents of an ACD queue, and the abandoned calls the FCC / Ofcom rules cap at 3 %.

ALTER TABLE campaigns
    -- the ACD queue answered calls join; NULL: paced by cps and max_concurrent only
    ADD COLUMN queue            text REFERENCES acd_queues (name) ON UPDATE CASCADE,
    -- calls in flight per idle agent: 1.0 progressive, above it predictive (lowered toward 1.0 as abandons grow)
    ADD COLUMN dial_ratio       real NOT NULL DEFAULT 1.0 CHECK (dial_ratio >= 1 AND dial_ratio <= 3),
    -- an answered call with no agent within this many seconds is abandoned (the rules' 2 s at most)
    ADD COLUMN abandon_after    real NOT NULL DEFAULT 2.0 CHECK (abandon_after > 0 AND abandon_after <= 2),
    -- what an abandoned call hears before the hang-up (who called, a number to call back): a file or URL
    ADD COLUMN abandon_message  text CHECK (abandon_message ~ '^[A-Za-z0-9_./:@+=-]{1,255}$'),
    -- the cap on abandoned / answered over the measuring window (ESL_APP_DIALER_ABANDON_WINDOW, 24 h)
    ADD COLUMN max_abandon_rate real NOT NULL DEFAULT 0.03 CHECK (max_abandon_rate > 0 AND max_abandon_rate <= 0.03),
    -- an abandoned contact is called again no sooner than this (Ofcom: not within 72 h without an agent)
    ADD COLUMN retry_abandoned  interval NOT NULL DEFAULT '72 hours',
    ADD CONSTRAINT campaigns_queue_message CHECK (queue IS NULL OR abandon_message IS NOT NULL);

ALTER TABLE attempts DROP CONSTRAINT attempts_outcome_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_outcome_check
    CHECK (outcome IN ('answered', 'busy', 'no_answer', 'failed', 'final', 'lost', 'not_originated', 'abandoned'));

-- the abandon rate: answered and abandoned attempts of the measuring window, every pacing round
CREATE INDEX attempts_answered ON attempts (campaign_id, answered_at) WHERE answered_at IS NOT NULL;
