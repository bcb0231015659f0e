-- One order shard (a database of its own; a region has several). Orders
-- live in their user's shard; an order id embeds its shard's name.
--
-- The state machine is enforced here, whatever the code does: a state
-- change not listed in order_state_edges is refused, and every state an
-- order enters is written to the outbox in the same transaction.

create table order_state_edges (
    from_state text not null,
    to_state   text not null,
    primary key (from_state, to_state)
);

insert into order_state_edges (from_state, to_state) values
    ('pending', 'reserved'),
    ('pending', 'cancelled'),
    ('reserved', 'authorized'),
    ('reserved', 'payment_failed'),
    ('reserved', 'cancelled'),
    ('authorized', 'confirmed'),
    ('authorized', 'cancelled'),
    ('confirmed', 'captured'),
    ('confirmed', 'cancelled'),
    ('captured', 'fulfilled'),
    ('captured', 'refunded'),
    ('fulfilled', 'refunded');

create table orders (
    id              text primary key check (id ~ '^[a-z0-9-]{1,63}\.[0-9a-f]{32}$'),
    user_id         text not null check (length(user_id) between 1 and 128),
    -- The checkout's Idempotency-Key, unique per user, and a hash of the
    -- request it came with (same key, different body: refused).
    idempotency_key text not null check (length(idempotency_key) between 1 and 255),
    request_hash    text not null,
    state           text not null check (state in (
                        'pending', 'reserved', 'authorized', 'confirmed', 'captured',
                        'fulfilled', 'cancelled', 'payment_failed', 'refunded')),
    currency        char(3) not null check (currency ~ '^[A-Z]{3}$'),
    total_minor     bigint not null check (total_minor >= 0),
    -- [{sku, name, quantity, unit_price_minor}]
    lines           jsonb not null,
    -- The inventory reservation on the catalog primary.
    reservation_id  bigint,
    -- Which payment provider holds the payment, and its intent id.
    psp             text,
    payment_intent  text,
    -- Providers whose authorization outcome was unknown (a timeout) when
    -- another was used: the reconciler looks there for strays to void.
    unknown_psps    text[] not null default '{}',
    failure_reason  text,
    -- The checkout's answer, replayed for a repeated Idempotency-Key.
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (user_id, idempotency_key)
);

-- Ids are UUIDv7 (time first), so a user's orders by id are by time.
create index orders_by_user on orders (user_id, id desc);
-- The recovery worker's list: orders whose saga has not finished.
create index orders_unfinished on orders (updated_at)
    where state in ('pending', 'reserved', 'authorized', 'confirmed');

-- The transactional outbox: one event per state an order enters, for
-- consumers outside this database (e-mail, fulfilment, analytics).
create table order_outbox (
    id           bigint generated always as identity primary key,
    order_id     text not null references orders (id),
    event        text not null,
    payload      jsonb not null,
    created_at   timestamptz not null default now(),
    published_at timestamptz
);

create index order_outbox_unpublished on order_outbox (id) where published_at is null;

create function orders_check_transition() returns trigger
language plpgsql as $$
begin
    if new.state <> old.state and not exists (
        select 1 from order_state_edges where from_state = old.state and to_state = new.state
    ) then
        raise exception 'illegal order transition % -> % for order %', old.state, new.state, old.id
            using errcode = 'check_violation';
    end if;
    new.updated_at := now();
    return new;
end;
$$;

create trigger orders_transition
    before update on orders
    for each row execute function orders_check_transition();

create function orders_outbox_event() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' or new.state <> old.state then
        insert into order_outbox (order_id, event, payload) values (
            new.id,
            'order.' || new.state,
            jsonb_build_object(
                'order_id', new.id,
                'user_id', new.user_id,
                'state', new.state,
                'previous_state', case when tg_op = 'INSERT' then null else old.state end,
                'total_minor', new.total_minor,
                'currency', new.currency,
                'at', now()
            )
        );
    end if;
    return null;
end;
$$;

create trigger orders_outbox
    after insert or update of state on orders
    for each row execute function orders_outbox_event();
