-- One saga step in one statement and one row write. A step moves an order
-- through several states (pending → reserved → authorized, say); instead
-- of one UPDATE per state, `order_advance` announces the states entered
-- (transaction-local settings) and writes the row once. The triggers read
-- the announcement: the transition trigger checks every hop of it against
-- order_state_edges (an illegal hop refuses the whole step), the outbox
-- trigger writes one event per state entered, in order. Without an
-- announcement (any other UPDATE) a state change is one hop, as before.

-- The states an update of order p_id to p_to enters, first to last: the
-- announced path if it is for this order and ends there, else just p_to.
create function orders_path(p_id text, p_to text) returns text[]
language plpgsql stable as $$
declare
    path text[];
begin
    if current_setting('meridian.advance_order', true) = p_id then
        path := string_to_array(current_setting('meridian.advance_path', true), ',');
        if path[cardinality(path)] = p_to then
            return path;
        end if;
    end if;
    return array[p_to];
end;
$$;

create or replace function orders_check_transition() returns trigger
language plpgsql as $$
declare
    at_state   text := old.state;
    next_state text;
begin
    if new.state <> old.state then
        foreach next_state in array orders_path(new.id, new.state) loop
            if not exists (
                select 1 from order_state_edges where from_state = at_state and to_state = next_state
            ) then
                raise exception 'illegal order transition % -> % for order %', at_state, next_state, old.id
                    using errcode = 'check_violation';
            end if;
            at_state := next_state;
        end loop;
    end if;
    new.updated_at := now();
    return new;
end;
$$;

create or replace function orders_outbox_event() returns trigger
language plpgsql as $$
declare
    -- The states entered, first to last, and the one left.
    entered text[];
    left_state text := case when tg_op = 'INSERT' then null else old.state end;
begin
    if tg_op = 'INSERT' then
        entered := array[new.state];
    elsif new.state <> old.state then
        entered := orders_path(new.id, new.state);
    else
        return null;
    end if;
    insert into order_outbox (order_id, event, payload)
    select new.id,
           'order.' || hop.state,
           jsonb_build_object(
               'order_id', new.id,
               'user_id', new.user_id,
               'state', hop.state,
               'previous_state', coalesce(lag(hop.state) over (order by hop.n), left_state),
               'total_minor', new.total_minor,
               'currency', new.currency,
               'at', now()
           )
    from unnest(entered) with ordinality as hop (state, n)
    order by hop.n;
    return null;
end;
$$;

-- Moves order p_id from the state it was read in (p_from) through the
-- states of p_path, setting the step's fields, in one statement. Returns
-- false, changing nothing, when the order is not in p_from any more
-- (another worker moved it first). An empty path only sets fields.
create function order_advance(
    p_id              text,
    p_from            text,
    p_path            text[],
    p_reservation_id  bigint,
    p_psp             text,
    p_payment_intent  text,
    p_unknown_psps    text[],
    p_failure_reason  text,
    p_response_status smallint,
    p_response_body   jsonb
) returns boolean
language plpgsql as $$
declare
    moved boolean;
begin
    perform set_config('meridian.advance_order', p_id, true);
    perform set_config('meridian.advance_path', array_to_string(p_path, ','), true);
    update orders set
        state = coalesce(p_path[cardinality(p_path)], state),
        reservation_id = coalesce(p_reservation_id, reservation_id),
        psp = coalesce(p_psp, psp),
        payment_intent = coalesce(p_payment_intent, payment_intent),
        unknown_psps = coalesce(p_unknown_psps, unknown_psps),
        failure_reason = coalesce(p_failure_reason, failure_reason),
        response_status = coalesce(p_response_status, response_status),
        response_body = coalesce(p_response_body, response_body)
    where id = p_id and state = p_from;
    moved := found;
    perform set_config('meridian.advance_order', '', true);
    return moved;
end;
$$;

-- The reconciler's list: settled orders that still name providers whose
-- outcome was unknown (it polls this; without the index, a scan of every
-- order each time).
create index orders_unknown_psps on orders (id) where cardinality(unknown_psps) > 0;
