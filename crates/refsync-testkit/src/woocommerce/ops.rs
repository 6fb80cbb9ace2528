//! Shop actions: what customers and admins do in the store (checkout, status changes, notes,
//! trash), with WooCommerce's coupon checks and usage counting.

use chrono::{DateTime, Utc};

use super::NewOrder;
use super::model::{
    Address, CouponLine, ORDER_STATUSES, Order, State, USAGE_STATUSES, normal_code, now_secs,
    parse_money,
};

fn check_status(status: &str) -> Result<(), String> {
    if ORDER_STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "invalid order status {status:?} (one of {})",
            ORDER_STATUSES.join(", ")
        ))
    }
}

/// Checkout: validates the coupons as `WC_Discounts::is_coupon_valid` and the checkout e-mail
/// checks do, creates the order, counts coupon usage when the status is one WooCommerce counts
/// on, and queues `order.created`.
pub(super) fn place_order(state: &mut State, order: NewOrder) -> Result<u64, String> {
    let NewOrder {
        email,
        customer_id,
        coupon_codes,
        status,
        total,
    } = order;
    check_status(&status)?;
    let total = parse_money(&serde_json::Value::String(total.clone()))
        .filter(|t| *t >= 0)
        .ok_or_else(|| format!("invalid order total {total:?}"))?;
    let email = email.trim().to_owned();
    if !email.contains('@') {
        return Err("Invalid billing email address".to_owned());
    }
    let customer = if customer_id == 0 {
        None
    } else {
        Some(
            state
                .customers
                .get(&customer_id)
                .cloned()
                .ok_or_else(|| "Invalid customer ID.".to_owned())?,
        )
    };
    let now = now_secs();
    let user = (customer_id != 0).then(|| customer_id.to_string());

    // Coupons, in the order given.
    let mut coupon_ids: Vec<u64> = Vec::new();
    for code in &coupon_codes {
        let Some(id) = state.coupon_id_by_code(code) else {
            return Err(format!("Coupon \"{}\" does not exist!", normal_code(code)));
        };
        if coupon_ids.contains(&id) {
            return Err("Coupon code already applied!".to_owned());
        }
        let coupon = &state.coupons[&id];
        if coupon
            .usage_limit
            .is_some_and(|limit| coupon.usage_count >= limit)
        {
            return Err("Coupon usage limit has been reached.".to_owned());
        }
        if coupon.is_expired(&now) {
            return Err("This coupon has expired.".to_owned());
        }
        if coupon
            .usage_limit_per_user
            .is_some_and(|limit| coupon.uses_by(user.as_deref(), &email) >= limit)
        {
            return Err("Coupon usage limit has been reached.".to_owned());
        }
        if !coupon.allows_email(&email) {
            return Err(format!(
                "Sorry, it seems the coupon \"{}\" is not yours - it has now been removed from your order.",
                coupon.code
            ));
        }
        coupon_ids.push(id);
    }
    if coupon_ids.len() > 1 {
        if let Some(single) = coupon_ids
            .iter()
            .map(|id| &state.coupons[id])
            .find(|c| c.individual_use)
        {
            return Err(format!(
                "Sorry, coupon \"{}\" has already been applied and cannot be used in conjunction with other coupons.",
                single.code
            ));
        }
    }

    // Discounts are computed on the order total (see the module docs).
    let mut coupon_lines = Vec::with_capacity(coupon_ids.len());
    for id in &coupon_ids {
        let coupon = state.coupons[id].clone();
        let discount = match coupon.discount_type.as_str() {
            "percent" => (total * coupon.amount + 5_000) / 10_000,
            _ => coupon.amount,
        };
        coupon_lines.push(CouponLine {
            item_id: state.item_id(),
            code: coupon.code.clone(),
            discount,
        });
    }

    let mut billing = Address::billing();
    let mut shipping = Address::shipping();
    if let Some(c) = &customer {
        billing = c.billing.clone();
        shipping = c.shipping.clone();
        if billing.get("first_name").is_empty() {
            billing.set("first_name", &c.first_name);
        }
        if billing.get("last_name").is_empty() {
            billing.set("last_name", &c.last_name);
        }
    }
    billing.set("email", &email);
    if billing.get("country").is_empty() {
        billing.set("country", "US");
    }

    let id = state.post_id();
    let line_item_id = state.item_id();
    let order_key = format!(
        "wc_order_{}",
        state.random.chars(
            13,
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        )
    );
    let cart_hash = state.random.hex(32);
    let order = Order {
        id,
        order_key,
        cart_hash,
        status: "checkout-draft".to_owned(),
        customer_id,
        billing,
        shipping,
        total,
        line_item_id,
        coupon_lines,
        meta: Vec::new(),
        date_created: now,
        date_modified: now,
        date_paid: None,
        date_completed: None,
        usage_recorded: false,
    };
    state.orders.insert(id, order);
    apply_status(state, id, &status, now);
    state.fire("order", "created", id);
    Ok(id)
}

/// Sets the status and its side effects: `date_paid` the first time the order is paid
/// (`processing`/`completed`), `date_completed` when completed, coupon usage counted on
/// pending/processing/on-hold/completed and released on cancelled.
fn apply_status(state: &mut State, id: u64, status: &str, now: DateTime<Utc>) {
    let Some(order) = state.orders.get_mut(&id) else {
        return;
    };
    order.status = status.to_owned();
    if matches!(status, "processing" | "completed") && order.date_paid.is_none() {
        order.date_paid = Some(now);
    }
    if status == "completed" && order.date_completed.is_none() {
        order.date_completed = Some(now);
    }
    if matches!(status, "processing" | "completed") && order.customer_id != 0 {
        if let Some(c) = state.customers.get_mut(&order.customer_id) {
            c.is_paying_customer = true;
        }
    }
    let Some(order) = state.orders.get_mut(&id) else {
        return;
    };
    let increase = USAGE_STATUSES.contains(&status) && !order.usage_recorded;
    let decrease = status == "cancelled" && order.usage_recorded;
    if !increase && !decrease {
        return;
    }
    order.usage_recorded = increase;
    let used_by = if order.customer_id != 0 {
        order.customer_id.to_string()
    } else {
        order.billing.get("email").to_owned()
    };
    let codes: Vec<String> = order.coupon_lines.iter().map(|c| c.code.clone()).collect();
    for code in codes {
        let Some(coupon_id) = state.coupon_id_by_code(&code) else {
            continue;
        };
        let Some(coupon) = state.coupons.get_mut(&coupon_id) else {
            continue;
        };
        if increase {
            coupon.usage_count += 1;
            coupon.used_by.push(used_by.clone());
        } else {
            coupon.usage_count = coupon.usage_count.saturating_sub(1);
            if let Some(pos) = coupon.used_by.iter().position(|u| *u == used_by) {
                coupon.used_by.remove(pos);
            }
        }
    }
}

/// An admin changes the status (saving the order even when the status is unchanged):
/// `date_modified` moves, `order.updated` is queued.
pub(super) fn set_order_status(state: &mut State, id: u64, status: &str) -> Result<(), String> {
    check_status(status)?;
    if !state.orders.contains_key(&id) {
        return Err(format!("order {id} does not exist"));
    }
    let now = now_secs();
    apply_status(state, id, status, now);
    if let Some(order) = state.orders.get_mut(&id) {
        order.date_modified = now;
    }
    state.fire("order", "updated", id);
    Ok(())
}

/// Anything that saves the order without changing its status (a note, an address edit).
pub(super) fn touch_order(state: &mut State, id: u64) -> Result<(), String> {
    let order = state
        .orders
        .get_mut(&id)
        .ok_or_else(|| format!("order {id} does not exist"))?;
    order.date_modified = now_secs();
    state.fire("order", "updated", id);
    Ok(())
}

/// Moves the order to the trash (status `trash`, still readable by id) and queues
/// `order.deleted`; an order already in the trash is deleted for good, without a webhook (as
/// `wp_delete_post` fires none of the topic's hooks).
pub(super) fn delete_order(state: &mut State, id: u64) -> Result<(), String> {
    let order = state
        .orders
        .get_mut(&id)
        .ok_or_else(|| format!("order {id} does not exist"))?;
    if order.status == "trash" {
        state.orders.remove(&id);
        return Ok(());
    }
    order.status = "trash".to_owned();
    order.date_modified = now_secs();
    state.fire("order", "deleted", id);
    Ok(())
}
