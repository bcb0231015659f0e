-- Inventory on the catalog primary: stock per sellable SKU (a variant, or a
-- product without variants) and time-limited reservations (holds) taken
-- during checkout and flash-sale claims.
--
-- Invariant: for every SKU, reserved <= on_hand at every instant (enforced
-- here by CHECK constraints, whatever the code does), so available stock
-- (on_hand - reserved) is never negative and nothing is sold twice.

create table inventory (
    sku        text primary key check (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    -- Units in stock and not yet sold.
    on_hand    integer not null check (on_hand >= 0),
    -- Units held by reservations that are neither committed nor released.
    reserved   integer not null default 0 check (reserved >= 0),
    -- Units sold so far (committed reservations): the ledger tests check.
    sold       bigint not null default 0 check (sold >= 0),
    updated_at timestamptz not null default now(),
    constraint inventory_available_not_negative check (reserved <= on_hand)
);

-- One hold on stock. `owner` names what took it (a checkout's idempotency
-- scope, a flash-sale claim) and is unique, so retrying a reservation
-- returns the first one instead of taking stock twice.
create table reservations (
    id         bigint generated always as identity primary key,
    owner      text not null unique check (length(owner) between 1 and 400),
    state      text not null check (state in ('held', 'committed', 'released', 'expired')),
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- The sweeper's work list: holds past their expiry.
create index reservations_held_by_expiry on reservations (expires_at) where state = 'held';

create table reservation_lines (
    reservation_id bigint not null references reservations (id) on delete cascade,
    sku            text not null references inventory (sku),
    quantity       integer not null check (quantity > 0),
    primary key (reservation_id, sku)
);

-- A reservation leaves `held` once, to a final state; final states never
-- change, except that an expired hold may still be committed when its
-- stock could be taken again at commit time (a slow payment).
create function reservations_check_transition() returns trigger
language plpgsql as $$
begin
    if old.state <> new.state and old.state <> 'held'
       and not (old.state = 'expired' and new.state = 'committed') then
        raise exception 'reservation % is %, it cannot become %', old.id, old.state, new.state
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;

create trigger reservations_transition
    before update of state on reservations
    for each row execute function reservations_check_transition();
