-- esl-app inbound queues (ACD): configuration. The live state (agent status and state, callers
-- waiting) is in Redis (esl_app/queue/state.py); `QueueConfigStore.publish` copies this there.

CREATE TABLE acd_queues (
    name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    strategy         text NOT NULL DEFAULT 'longest-idle-agent'
                     CHECK (strategy IN ('longest-idle-agent', 'round-robin', 'top-down', 'skills-based')),
    max_wait_seconds integer NOT NULL DEFAULT 300 CHECK (max_wait_seconds > 0),  -- then the flow's fallback
    wrap_up_seconds  integer NOT NULL DEFAULT 10 CHECK (wrap_up_seconds >= 0),   -- after each answered call
    ring_seconds     integer NOT NULL DEFAULT 20 CHECK (ring_seconds > 0),       -- an offer rings this long
    no_answer_delay_seconds integer NOT NULL DEFAULT 30 CHECK (no_answer_delay_seconds >= 0),
    max_no_answer    integer NOT NULL DEFAULT 3 CHECK (max_no_answer >= 0),      -- then On Break (0: never)
    music            text NOT NULL DEFAULT 'local_stream://moh',
    announcement     text,                                                       -- played on entering, if set
    announce_every_seconds integer CHECK (announce_every_seconds IS NULL OR announce_every_seconds > 0)
);

CREATE TABLE acd_agents (
    id      text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    name    text NOT NULL DEFAULT '',
    contact text NOT NULL CHECK (contact <> '' AND contact !~ '[\s,|$\\]')   -- e.g. 'user/1001'
);

-- skill levels: 1 (basic) .. 10 (expert); a caller needing a skill at level L is offered agents at >= L
CREATE TABLE acd_agent_skills (
    agent_id text NOT NULL REFERENCES acd_agents (id) ON DELETE CASCADE,
    skill    text NOT NULL CHECK (skill ~ '^[A-Za-z0-9_.-]{1,64}$'),
    level    integer NOT NULL CHECK (level BETWEEN 1 AND 10),
    PRIMARY KEY (agent_id, skill)
);

-- which agents serve which queue: lower level first, then lower position (top-down, round-robin order)
CREATE TABLE acd_tiers (
    queue_name text NOT NULL REFERENCES acd_queues (name) ON DELETE CASCADE,
    agent_id   text NOT NULL REFERENCES acd_agents (id) ON DELETE CASCADE,
    level      integer NOT NULL DEFAULT 1 CHECK (level BETWEEN 1 AND 99),
    position   integer NOT NULL DEFAULT 1 CHECK (position BETWEEN 1 AND 9999),
    PRIMARY KEY (queue_name, agent_id)
);
CREATE INDEX acd_tiers_agent ON acd_tiers (agent_id);
