-- esl-app inbound queues: the ring-all strategy (docs/queues.md), and contacts that are one endpoint.
-- Ring-all joins the agents' contacts into one dial string ('[...]user/1001,[...]user/1002'), so a
-- contact holding a leg separator (',' '|' ':_:'), a variable block ('{' '[' '<') or a quote would
-- ring, or set variables on, more than its own agent. (003 already refuses spaces, ',', '|', '$', '\'.)

ALTER TABLE acd_queues DROP CONSTRAINT acd_queues_strategy_check;
ALTER TABLE acd_queues ADD CONSTRAINT acd_queues_strategy_check
    CHECK (strategy IN ('longest-idle-agent', 'round-robin', 'top-down', 'skills-based', 'ring-all'));

ALTER TABLE acd_agents ADD CONSTRAINT acd_agents_contact_one_endpoint
    CHECK (contact !~ '[][{}<>''"()^&]' AND strpos(contact, ':_:') = 0);
