//! Messages in: RECORDs (the fast lane's items, or judged here), SCHEMAs (compiled, routed and
//! published to the parse workers), and a record's way from its item to the writer.

use super::*;

impl<W: Write> Engine<W> {
    pub(super) fn message(&mut self, input: Result<Input, ReadError>) {
        match input {
            Ok(Input::Record(record)) => self.record_in(*record),
            Ok(Input::Message(read)) => self.read(Ok(read)),
            Err(err) => self.read(Err(err)),
        }
    }

    /// A RECORD from the parse workers: written with the item a worker made when the stream's
    /// SCHEMA and route are still those it used, or judged here like any parsed message.
    pub(super) fn record_in(&mut self, record: Record) {
        let Record { raw, prepared } = record;
        if let Some((prepared, made)) = prepared
            && let Some(&index) = self.by_name.get(&raw.stream)
            && self.streams[index].is_current(&prepared)
        {
            let line = raw.line;
            let ticket = self.tracker.issue(index as u32);
            self.totals.0 += 1;
            self.record_version(index, ticket, raw.version);
            self.streams[index].counts.records_in += 1;
            let text = RecordText::from(raw.record);
            match made {
                Ok(item) => self.write_item(index, ticket, line, &prepared.map, item, text),
                Err(refusal) => self.book_reject(index, ticket, line, &text.object(), refusal),
            }
            return;
        }
        let text = RecordText::from(raw.record.clone());
        match raw.into_message() {
            Ok(ReadMessage {
                line,
                message: Message::Record(message),
                ..
            }) => self.record(line, message, text),
            Ok(read) => self.read(Ok(read)),
            Err(err) => self.read(Err(err)),
        }
    }

    /// Publishes what the parse workers need to make the items of a stream's records.
    pub(super) fn publish(&self, index: usize) {
        let stream = &self.streams[index];
        let prepared = match (&stream.schema, &stream.route) {
            (Some(schema), Route::Write(map)) => Prepared::new(schema.clone(), map.clone()),
            _ => None,
        };
        self.published.set(&stream.name, prepared);
    }

    pub(super) fn read(&mut self, message: Result<ReadMessage, ReadError>) {
        let read = match message {
            Ok(read) => read,
            Err(ReadError::DuplicateKey {
                line,
                stream,
                pointer,
                record,
            }) => {
                self.duplicate_key(line, &stream, &pointer, *record);
                return;
            }
            Err(err) => {
                self.protocol(TargetError::Protocol {
                    line: err.line(),
                    detail: strip_line(&err.to_string()),
                });
                return;
            }
        };
        let line = read.line;
        match read.message {
            Message::Schema(schema) => self.schema(line, schema),
            Message::Record(record) => {
                let text = RecordText::from(&record.record);
                self.record(line, record, text);
            }
            Message::State(state) => {
                self.tally.states_in += 1;
                self.state_in(&state.value);
                self.tracker.state(state.value);
            }
            Message::ActivateVersion(m) => self.activate_version(line, &m.stream, m.version),
            Message::Batch(m) => self.protocol(TargetError::Protocol {
                line,
                detail: format!(
                    "stream {:?}: BATCH messages (records in files) are not supported; run the tap without batch_config",
                    m.stream
                ),
            }),
        }
    }

    pub(super) fn schema(&mut self, line: u64, message: SchemaMessage) {
        let name = message.stream.clone();
        if let Some(&index) = self.by_name.get(&name)
            && self.streams[index]
                .schema
                .as_ref()
                .is_some_and(|s| s.message == message)
        {
            return;
        }
        let compiled = match StreamSchema::compile(message) {
            Ok(compiled) => Arc::new(compiled),
            Err(detail) => {
                self.protocol(TargetError::Protocol {
                    line,
                    detail: format!("SCHEMA of stream {name:?}: {detail}"),
                });
                return;
            }
        };
        let route = self.router.route(&name);
        let kind = match &route {
            Route::Write(map) => {
                tracing::info!(stream = %name, kind = %map.kind, "routing stream");
                Some(map.kind.as_str())
            }
            Route::Skip(why) => {
                tracing::warn!(stream = %name, "not writing this stream: {why}");
                None
            }
            Route::Reject(why) => {
                tracing::warn!(stream = %name, "rejecting this stream's records: {why}");
                None
            }
        };
        match self.by_name.get(&name) {
            Some(&index) => {
                let stream = &mut self.streams[index];
                stream.schema = Some(compiled);
                stream.generation += 1;
                stream.route = route;
                stream.kind = kind;
                stream.counts.kind = kind.or(stream.counts.kind);
                self.publish(index);
            }
            None => {
                self.by_name.insert(name.clone(), self.streams.len());
                self.streams
                    .push(Stream::new(name.into(), Some(compiled), route, kind));
                self.publish(self.streams.len() - 1);
            }
        }
    }

    pub(super) fn record(&mut self, line: u64, message: RecordMessage, text: RecordText) {
        let Some(&index) = self.by_name.get(&message.stream) else {
            self.protocol(TargetError::Protocol {
                line,
                detail: format!(
                    "RECORD for stream {:?} before any SCHEMA for it (a tap must send a stream's SCHEMA first)",
                    message.stream
                ),
            });
            return;
        };
        let ticket = self.tracker.issue(index as u32);
        self.totals.0 += 1;
        self.record_version(index, ticket, message.version);
        let stream = &mut self.streams[index];
        stream.counts.records_in += 1;
        let (route, schema) = (stream.route.clone(), stream.schema.clone());
        match route {
            Route::Skip(why) => {
                self.skipped += 1;
                stream.counts.skip(why.to_string());
                // sync_log hook: skipped before routing.
                if let Some(log) = self.sync_log.as_mut() {
                    log.skipped(&stream.name, line, why.as_ref());
                }
                self.tracker.settle(ticket);
            }
            Route::Reject(why) => {
                self.book_reject(
                    index,
                    ticket,
                    line,
                    &message.record,
                    Refusal::new(why.to_string()),
                );
            }
            Route::Write(map) => {
                let record = match schema {
                    Some(schema) => {
                        let (record, checked) = schema.check(message.record);
                        if let Err(why) = checked {
                            self.book_reject(index, ticket, line, &record, Refusal::new(why));
                            return;
                        }
                        record
                    }
                    None => message.record,
                };
                self.write_record(index, ticket, line, &map, record, text);
            }
        }
    }

    /// A valid record of a written stream: mapped to roster's model, then handed over.
    pub(super) fn write_record(
        &mut self,
        index: usize,
        ticket: Ticket,
        line: u64,
        map: &StreamMap,
        record: Object,
        text: RecordText,
    ) {
        match map.item(&record) {
            Ok(item) => self.write_item(index, ticket, line, map, item, text),
            Err(refusal) => self.book_reject(index, ticket, line, &record, refusal),
        }
    }

    /// A record's item, checked and mapped: screened, then handed over.
    pub(super) fn write_item(
        &mut self,
        index: usize,
        ticket: Ticket,
        line: u64,
        map: &StreamMap,
        mut item: Item,
        text: RecordText,
    ) {
        // identity hook: the duplicate-identity guard, before anything is sent.
        if let Some(guard) = self.identity.as_mut() {
            let screened = guard.screen(&self.streams[index].name, line, &item);
            if screened != Screened::Clear {
                self.streams[index].counts.duplicate_identities += 1;
            }
            if let Screened::Reject(reason) = screened {
                self.book_reject(index, ticket, line, &text.object(), Refusal::new(reason));
                return;
            }
        }
        let membership = map.membership(&mut item);
        let origin = Arc::new(Origin {
            stream: self.streams[index].name.clone(),
            line,
            record: text,
        });
        // sync_log hook: the record is an op (two with a `group_key` membership).
        if let Some(log) = self.sync_log.as_mut() {
            log.routed(ticket, &origin.stream, line, &item);
        }
        let op = Op {
            ticket,
            item,
            origin: origin.clone(),
        };
        let second = membership.map(|membership| {
            let group = membership.group_id.clone().unwrap_or_default();
            let second = Op {
                ticket: self.tracker.issue(index as u32),
                item: membership,
                origin,
            };
            (second, group)
        });
        // sync_log hook: either half may settle last and book the row.
        if let (Some(log), Some((second, _))) = (self.sync_log.as_mut(), &second) {
            log.routed(second.ticket, &second.origin.stream, line, &op.item);
        }
        if self.held.is_none() {
            match second {
                None => self.submit(op),
                Some((second, group)) => self.submit_pair(index, op, second, group),
            }
            return;
        }
        self.hand_over_held(op, second);
    }

    /// For writers that hold memberships: a users or groups record goes first, then the
    /// memberships it completes; a membership waits for its group and user.
    pub(super) fn hand_over_held(&mut self, op: Op, second: Option<(Op, String)>) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let ticket = op.ticket;
        let released = match op.item.kind {
            Kind::Users => op.item.id.clone().map(|k| held.user_came(&k)),
            Kind::Groups => op.item.id.clone().map(|k| held.group_came(&k)),
            Kind::Memberships => {
                match held.offer(op) {
                    Ok(Some(op)) => self.submit(op),
                    Ok(None) => {}
                    Err(err) => self.stop(TargetError::Hold(err)),
                }
                return;
            }
            _ => None,
        };
        self.submit(op);
        for op in released.unwrap_or_default() {
            self.submit(op);
        }
        // A users row's `group_key` membership waits like any other membership; the row is
        // booked once both halves are settled.
        if let Some((second, group)) = second {
            self.pairs.insert(ticket, (second.ticket, None));
            self.pairs.insert(second.ticket, (ticket, Some(group)));
            let offered = self.held.as_mut().map(|held| held.offer(second));
            match offered {
                Some(Ok(Some(op))) => self.submit(op),
                Some(Err(err)) => self.stop(TargetError::Hold(err)),
                Some(Ok(None)) | None => {}
            }
        }
    }
}
